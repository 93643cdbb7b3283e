"""Recommending: a catalog of item vectors, how histories score it, the collaborative
model a hybrid blends in, and the Recommender."""

from bertrec.recommend.catalog import ItemCatalog
from bertrec.recommend.collab import CollabSettings
from bertrec.recommend.explain import Contribution, Explanation
from bertrec.recommend.recommender import Recommender
from bertrec.recommend.scorer import History, Scorer

__all__ = [
    "CollabSettings",
    "Contribution",
    "Explanation",
    "History",
    "ItemCatalog",
    "Recommender",
    "Scorer",
]
