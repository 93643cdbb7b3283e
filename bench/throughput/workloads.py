"""The two text workloads: the short mix of recommendation traffic (``bench.common``'s
``load_text_mix``, ~29 tokens) and long item descriptions of 128-512 tokens, cut from
CPython's stdlib documentation (no downloads)."""

from __future__ import annotations

import hashlib
import importlib
import platform
import random
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import DOC_MODULES, TextMix, _docstrings, load_text_mix

WORKLOADS = ("short", "long")
# Tokens per long text, [CLS] and [SEP] included, before any model's truncation.
LONG_TOKENS = (128, 512)
LONG_SOURCE = "stdlib_docs"


def _prose(doc: str) -> list[str]:
    """The prose paragraphs of a docstring (no code, tables or lists), one line each."""
    out = []
    for block in re.split(r"\n\s*\n", doc):
        lines = block.splitlines()
        if not lines or any(
            ln.startswith((" ", "\t", ">>>", "...", "-", "*", "|", "+", "=")) for ln in lines
        ):
            continue
        para = " ".join(block.split())
        if len(para.split()) >= 6:
            out.append(para)
    return out


def module_streams() -> dict[str, str]:
    """Each documented stdlib module's prose, its docstrings' paragraphs joined in order."""
    streams = {}
    for name in DOC_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:  # a CPython built without e.g. ssl
            continue
        paras = [p for doc in _docstrings(module) for p in _prose(doc)]
        if paras:
            streams[name] = " ".join(dict.fromkeys(paras))
    return streams


def cut_long_texts(
    streams: dict[str, str], tokenizer_json: Path, seed: int = 0
) -> list[tuple[str, str]]:
    """(text, module) pieces of each module's stream, each of a length drawn uniformly from
    ``LONG_TOKENS`` and ending at the last sentence end that fits (a piece of at least the
    minimum length that cannot end on one is cut mid-sentence); the stream's tail shorter
    than the minimum is dropped."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    tok.no_truncation()
    tok.no_padding()
    lo, hi = LONG_TOKENS[0] - 2, LONG_TOKENS[1] - 2  # room for [CLS] and [SEP]
    rng = random.Random(seed)
    pieces = []
    for name, stream in streams.items():
        enc = tok.encode(stream, add_special_tokens=False)
        offsets, tokens = enc.offsets, enc.tokens
        start = 0
        while len(tokens) - start >= lo:
            want = min(rng.randint(lo, hi), len(tokens) - start)
            ends = [i for i in range(start + lo, start + want) if tokens[i] in (".", "!", "?")]
            stop = (ends[-1] + 1) if ends else start + want
            text = stream[offsets[start][0] : offsets[stop - 1][1]].strip()
            pieces.append((text, name))
            start = stop
    return pieces


def load_long_texts(n: int, tokenizer_json: Path, seed: int = 0) -> TextMix:
    """``n`` long texts (128-512 tokens with the tokenizer of ``tokenizer_json``), sampled
    and shuffled with ``seed``; repeated only if the pool is smaller than ``n``."""
    pool = cut_long_texts(module_streams(), tokenizer_json, seed)
    if not pool:
        raise RuntimeError("no stdlib documentation found to build the long texts from")
    rng = random.Random(seed)
    picks = rng.sample(pool, n) if n <= len(pool) else [rng.choice(pool) for _ in range(n)]
    return TextMix(
        texts=[t for t, _ in picks], sources=[LONG_SOURCE] * n, seed=seed, movielens_dir=""
    )


def describe_long(mix: TextMix, tokenizer_json: Path) -> dict[str, Any]:
    """The long workload's record entry: size, hash, token lengths, where it comes from."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    tok.no_truncation()
    tok.no_padding()
    lens = np.asarray([len(e.ids) for e in tok.encode_batch(mix.texts)])
    h = hashlib.sha256()
    for t in mix.texts:
        h.update(t.encode("utf-8") + b"\0")
    return {
        "n": len(mix.texts),
        "seed": mix.seed,
        "sha256": h.hexdigest(),
        "by_source": dict(Counter(mix.sources)),
        "tokens_untruncated": {
            "mean": round(float(lens.mean()), 1) if lens.size else 0.0,
            "min": int(lens.min()) if lens.size else 0,
            "max": int(lens.max()) if lens.size else 0,
        },
        "target_tokens": list(LONG_TOKENS),
        "from": f"CPython {platform.python_version()} stdlib docstrings ({len(DOC_MODULES)} "
        "modules), each module's prose joined and cut at sentence ends",
    }


def load_workload(
    workload: str, n: int, seed: int, data_dir: Path | None, tokenizer_json: Path
) -> TextMix:
    """The texts of ``workload``: ``short`` (the MovieLens + stdlib mix) or ``long``."""
    if workload == "long":
        return load_long_texts(n, tokenizer_json, seed)
    return load_text_mix(n, seed, data_dir)
