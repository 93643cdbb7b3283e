"""A seeded random BERT-family checkpoint with a WordPiece tokenizer, built in seconds: the
fast test model (tests/conftest.py's fixtures and .ci/install_check.sh use it)."""

from __future__ import annotations

import re
from pathlib import Path

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _vocab() -> list[str]:
    from bertrec.runtime.texts import default_sentences

    words = sorted({w for s in default_sentences() for w in re.findall(r"[a-z]+", s.lower())})
    chars = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list("0123456789.,!?'-:;()")
    return list(dict.fromkeys(SPECIALS + chars + [f"##{c}" for c in chars] + words))


def build_tiny_checkpoint(path: Path, model_type: str = "bert", seed: int = 0) -> Path:
    """Save a seeded random model of ``model_type`` with a WordPiece tokenizer into ``path``."""
    import torch
    from transformers import (
        AutoModel,
        BertConfig,
        BertTokenizerFast,
        DistilBertConfig,
        ElectraConfig,
        MPNetConfig,
        RobertaConfig,
        XLMRobertaConfig,
    )

    path.mkdir(parents=True, exist_ok=True)
    vocab = _vocab()
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    BertTokenizerFast(vocab_file=str(path / "vocab.txt"), do_lower_case=True).save_pretrained(
        str(path)
    )
    common = {"vocab_size": len(vocab), "pad_token_id": 0}
    bert_like = {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": 130,
        **common,
    }
    configs = {
        "bert": lambda: BertConfig(**bert_like),
        "electra": lambda: ElectraConfig(embedding_size=32, **bert_like),
        "roberta": lambda: RobertaConfig(**bert_like),
        "xlm-roberta": lambda: XLMRobertaConfig(**bert_like),
        "mpnet": lambda: MPNetConfig(**bert_like),
        "distilbert": lambda: DistilBertConfig(
            dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=128, **common
        ),
    }
    torch.manual_seed(seed)
    model = AutoModel.from_config(configs[model_type]())
    model.save_pretrained(str(path))
    return path
