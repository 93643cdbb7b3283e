"""Diversity re-ranking: maximal marginal relevance over a best-first candidate list.

``mmr_select`` is the one MMR; ``diverse_picks`` is how bertrec uses it (relevance from
the rank, mean-cosine redundancy), for ``Recommender.recommend(diversity=...)`` and
``CosineRanker.mmr`` alike.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from bertrec.core import check_choice, check_float, check_int
from bertrec.errors import InputTypeError, InputValueError

# How mmr_select measures a candidate's redundancy with the items already picked.
REDUNDANCY = ("max", "mean")
# Relevance of candidate rank r is r ** -RANK_DECAY: on MovieLens the hit rate of a
# candidate rank falls about that way whatever the score gaps (bench/diversity_frontier.py).
RANK_DECAY = 0.5
# The largest re-ranking weight losing <= 5% NDCG@10 on the MovieLens validation split
# (picked by bench/recsys_eval.py).
SUGGESTED_DIVERSITY = 0.7
# The same for a hybrid Recommender (with interactions), warm MovieLens protocol: its
# lists are already more varied, and 0.7 costs it 8.5% NDCG@10 on validation.
SUGGESTED_HYBRID_DIVERSITY = 0.6
# Candidates re-ranked: the best 300 items.
DEFAULT_CANDIDATES = 300


def check_diversity(diversity: object) -> float:
    """``diversity`` as a float in [0, 1], or a ``ConfigError``."""
    return check_float(diversity, "diversity", 0.0, 1.0)


def mmr_select(
    relevance: ArrayLike,
    vectors: ArrayLike,
    k: int,
    diversity: float = 0.3,
    redundancy: str = "max",
) -> NDArray[np.intp]:
    """Maximal marginal relevance: greedily pick ``k`` of the candidates.

    Each step takes the candidate maximizing
    ``(1 - diversity) * relevance - diversity * redundancy``, where redundancy is the
    candidate's max cosine to the ones already picked (Carbonell & Goldstein, 1998) or,
    with ``redundancy="mean"``, its mean cosine to them (which targets intra-list
    diversity, a mean over pairs, directly). ``diversity=0`` is the relevance order; ties
    go to the lower candidate index, so candidates sorted best first keep their order.

    Args:
        relevance: (p,) scores of the candidates.
        vectors: (p, dim) unit-norm vectors of the candidates.
        k: how many to pick (at most p are returned).
        diversity: the weight in [0, 1] of novelty against relevance.
        redundancy: ``"max"`` or ``"mean"`` cosine to the picked candidates.

    Returns:
        Indices into the candidates, in pick order.

    Raises:
        ConfigError: k <= 0, diversity outside [0, 1], unknown redundancy.
        InputTypeError: relevance or vectors are not numbers.
        InputValueError: relevance and vectors disagree in length, or hold NaN/inf.
    """
    k = check_int(k, "k")
    check_choice(redundancy, "redundancy", REDUNDANCY)
    lam = check_diversity(diversity)
    try:
        rel = np.asarray(relevance, dtype=np.float64)
        vec = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InputTypeError(
            f"relevance and vectors must be real-valued arrays ({exc}); pass numbers"
        ) from exc
    if rel.ndim != 1 or vec.ndim != 2 or len(rel) != len(vec):
        raise InputValueError(
            f"relevance (shape {rel.shape}) and vectors (shape {vec.shape}) must be (p,) and "
            "(p, dim) for the same p candidates"
        )
    if not (np.isfinite(rel).all() and np.isfinite(vec).all()):
        raise InputValueError(
            "relevance and vectors must be finite (NaN or inf found); drop or fix those "
            "candidates first"
        )
    p = len(rel)
    if p == 0:
        return np.empty(0, dtype=np.intp)
    # One row of similarities per pick (k x p), never the p x p matrix: a large pool
    # costs memory linear in its size.
    picked = np.empty(min(k, p), dtype=np.intp)
    taken = np.zeros(p, dtype=bool)
    max_sim = np.full(p, -np.inf)
    sum_sim = np.zeros(p)
    for step in range(len(picked)):
        if step == 0:
            penalty: NDArray[np.float64] | float = 0.0
        else:
            penalty = max_sim if redundancy == "max" else sum_sim / step
        objective = (1.0 - lam) * rel - lam * penalty
        objective[taken] = -np.inf
        best = int(np.argmax(objective))
        picked[step] = best
        taken[best] = True
        sims = (vec @ vec[best]).astype(np.float64)
        np.maximum(max_sim, sims, out=max_sim)
        sum_sim += sims
    return picked


def diverse_picks(
    vectors: ArrayLike, k: int, diversity: float, rank_decay: float = RANK_DECAY
) -> NDArray[np.intp]:
    """Which ``k`` of a best-first candidate list to show, in their list order.

    MMR (``mmr_select`` with mean-cosine redundancy) on relevance ``rank ** -rank_decay``
    instead of the raw scores: what a rank is worth is measured in hits, which fall with
    rank the same way whatever the score gaps of a user. The picks are returned sorted, so
    the shown list keeps the candidates' score order (the most relevant first) and only
    its membership changes.

    Args:
        vectors: (p, dim) unit-norm vectors of the candidates, best first.
        k: items to pick.
        diversity: weight in [0, 1] of novelty against relevance.
        rank_decay: exponent of the rank relevance (>= 0; 0 ignores rank).

    Raises:
        ConfigError: k <= 0, diversity outside [0, 1], rank_decay negative or not finite.
        InputTypeError / InputValueError: vectors not a finite (p, dim) number array.
    """
    decay = check_float(rank_decay, "rank_decay", 0.0)
    vecs = np.asarray(vectors)  # mmr_select checks the values
    p = vecs.shape[0] if vecs.ndim else 0
    relevance = np.arange(1, p + 1, dtype=np.float64) ** -decay
    return np.sort(mmr_select(relevance, vecs, k, diversity, redundancy="mean"))
