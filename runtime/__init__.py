"""Runtime: the model-directory format and ONNX Runtime encoding (numpy, tokenizers, ORT only)."""
