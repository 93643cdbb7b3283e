"""Peers of bench/serve_load.py: the infinity-emb venv and the naive server."""
