"""Why an item was recommended: its score split into the popularity prior and one share
per history entry and signal (``Recommender.recommend(..., explain=True)``).

Every part of a score is a sum over history entries, so the split is exact: the knn
content score is the mean of the ``top_m`` best weighted similarities (each of those
entries gets its term), the mean profile's is a weighted sum of cosines, EASE's is
``sum_i w_i B[i, j]`` and ALS's ``sum_i c_i (A^-1 y_i) . y_j``; the blend's factors
(``scorer.py``) scale them. The shares add up to ``score - prior``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bertrec.recommend.collab import UserScorer
from bertrec.recommend.scorer import History, Scorer

CONTENT = "content"
COLLABORATIVE = "collaborative"


@dataclass(frozen=True)
class Contribution:
    """One history entry's part of a recommendation's score.

    Attributes:
        source: the history item id, or the free text, that contributed.
        via: ``"content"`` (text similarity) or ``"collaborative"`` (the CF model).
        share: its part of the score (negative when it pulled the score down).
    """

    source: Any
    via: str
    share: float


@dataclass(frozen=True)
class Explanation:
    """A recommended item, its score, and where the score came from.

    Attributes:
        item: the item id.
        score: its score (as ``recommend`` returns it without ``explain``).
        prior: the popularity prior's part of ``score``.
        contributions: the history entries' parts, largest share first; they add up to
            ``score - prior`` (a user with no usable history has none: all is prior).
    """

    item: Any
    score: float
    prior: float
    contributions: tuple[Contribution, ...]


def explain(
    scorer: Scorer,
    user: History,
    sources: Sequence[Any],
    items: Sequence[tuple[Any, float]],
    rows: NDArray[np.int64],
    catalog: NDArray[np.float32],
    prior: NDArray[np.float32],
    collab: UserScorer | None,
) -> list[Explanation]:
    """Explanations of one user's recommendations.

    Args:
        scorer: the scoring settings.
        user: the prepared history (``Recommender.history``).
        sources: what each history entry is (item ids, then free texts).
        items: the recommendations, ``(item_id, score)``.
        rows: their catalog rows.
        catalog: item vectors; prior: the log-popularity prior per row.
        collab: the collaborative scorer of this one user, or None.
    """
    gains = None if collab is None else scorer.collab_gains([user], collab)
    out = []
    for (item, score), row in zip(items, rows.tolist(), strict=True):
        if user.cold:
            out.append(Explanation(item, score, float(prior[row]), ()))
            continue
        parts: list[Contribution] = []
        content = _content_parts(scorer, user, catalog[row])
        parts += [Contribution(sources[i], CONTENT, float(s)) for i, s in content.items()]
        prior_weight = scorer.popularity_weight
        if collab is not None and gains is not None:
            warm_gain, cold_gain, prior_w = gains
            prior_weight = float(prior_w[0])
            cold = collab.block(row, row + 1)[1][0]
            gain = float((cold_gain if cold else warm_gain)[0])
            if gain:
                cf = collab.parts(0, row) * gain
                parts += [
                    Contribution(sources[i], COLLABORATIVE, float(s))
                    for i, s in enumerate(cf.tolist())
                    if s
                ]
        parts.sort(key=lambda c: -c.share)
        out.append(Explanation(item, score, prior_weight * float(prior[row]), tuple(parts)))
    return out


def _content_parts(scorer: Scorer, user: History, item: NDArray[np.float32]) -> dict[int, float]:
    """Entry index -> its part of the content score of ``item``."""
    vecs = user.vectors.astype(np.float64)
    w = scorer.content_weights(user)
    if not w.any():
        return {}
    sims = vecs @ item.astype(np.float64)
    if scorer.profile == "mean":
        age = np.arange(len(vecs))[::-1]
        a = w * 0.5 ** (age / scorer.half_life)
        norm = float(np.linalg.norm((a[:, None] * vecs).sum(axis=0)))
        return {int(i): float(a[i] * sims[i] / norm) for i in np.flatnonzero(a)}
    entries = np.flatnonzero(w > 0)[-scorer.recent :]
    scaled = sims[entries] * (w[entries] / w[entries].max())
    m = min(scorer.top_m, len(entries))
    best = np.argsort(-scaled, kind="stable")[:m]
    return {int(entries[j]): float(scaled[j] / m) for j in best}
