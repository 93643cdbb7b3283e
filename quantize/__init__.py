"""Quantize: add int8 (CPU) and fp16 (CUDA) variants to a model directory."""
