"""Recommending: a catalog of item vectors, how histories score it, and the Recommender."""

from bertrec.recommend.catalog import ItemCatalog
from bertrec.recommend.recommender import Recommender
from bertrec.recommend.scorer import History, Scorer

__all__ = ["History", "ItemCatalog", "Recommender", "Scorer"]
