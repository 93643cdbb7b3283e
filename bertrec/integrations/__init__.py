"""Adapters to other libraries' embedding interfaces (each an optional extra):
``bertrec.integrations.langchain.BertrecEmbeddings`` (``bertrec[langchain]``) and
``bertrec.integrations.llamaindex.BertrecEmbedding`` (``bertrec[llamaindex]``)."""
