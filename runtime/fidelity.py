"""Cosine fidelity between two sets of embeddings, the figure every faster variant reports."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from bertrec.errors import InputValueError


def cosine_rows(a: NDArray[np.floating[Any]], b: NDArray[np.floating[Any]]) -> NDArray[np.float64]:
    """Row-wise cosine similarity, computed in float64."""
    a64 = np.asarray(a, dtype=np.float64)
    b64 = np.asarray(b, dtype=np.float64)
    if a64.shape != b64.shape or a64.ndim != 2:
        raise InputValueError(f"cannot compare embeddings of shapes {a64.shape} and {b64.shape}")
    num = np.einsum("ij,ij->i", a64, b64)
    den = np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1)
    return np.asarray(num / np.maximum(den, 1e-300), dtype=np.float64)


def fidelity(
    candidate: NDArray[np.floating[Any]], reference: NDArray[np.floating[Any]]
) -> dict[str, float]:
    """Min / 1st-percentile / mean cosine and max abs diff of ``candidate`` vs ``reference``."""
    cos = cosine_rows(candidate, reference)
    diff = np.abs(np.asarray(candidate, np.float64) - np.asarray(reference, np.float64))
    return {
        "min_cos": float(cos.min()),
        "p1_cos": float(np.percentile(cos, 1)),
        "mean_cos": float(cos.mean()),
        "max_abs_diff": float(diff.max()),
        "n": int(len(cos)),
    }
