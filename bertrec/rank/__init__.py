"""Ranking: exact cosine top-k over a catalog of vectors, and diversity re-ranking."""

from bertrec.rank.mmr import (
    DEFAULT_CANDIDATES,
    RANK_DECAY,
    SUGGESTED_DIVERSITY,
    SUGGESTED_HYBRID_DIVERSITY,
    diverse_picks,
    mmr_select,
)
from bertrec.rank.topk import CosineRanker, TopK, blocked_topk, normalize_rows, select_topk

__all__ = [
    "DEFAULT_CANDIDATES",
    "RANK_DECAY",
    "SUGGESTED_DIVERSITY",
    "SUGGESTED_HYBRID_DIVERSITY",
    "CosineRanker",
    "TopK",
    "blocked_topk",
    "diverse_picks",
    "mmr_select",
    "normalize_rows",
    "select_topk",
]
