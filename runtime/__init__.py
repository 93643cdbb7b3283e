"""Runtime: the model-directory format and ONNX Runtime encoding (numpy, tokenizers, ORT only)."""

# The repository root holds this folder too; only the installed name is valid.
if __name__ != "bertrec.runtime":
    raise ImportError(f"import bertrec.runtime, not {__name__} (this folder is part of bertrec)")
