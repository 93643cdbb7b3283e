"""The hybrid Recommender: EASE and ALS against direct computations, the blend formula,
cold items, explanations, persistence and batching, on a fake encoder (fast)."""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bertrec import ConfigError, InputValueError, ItemCatalog, Recommender
from bertrec.recommend.collab import ALS, EASE, CollabSettings
from bertrec.recommend.explain import Explanation


class FakeEncoder:
    dim = 16
    fingerprint = "fake-hybrid"

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            v = np.random.default_rng(zlib.crc32(t.encode())).standard_normal(self.dim)
            out[i] = v / np.linalg.norm(v)
        return out


N = 30
TEXTS = [f"item {i}" for i in range(N)]
IDS = [100 + i for i in range(N)]


def interactions(users: int = 40, seed: int = 0, cold: int = 5) -> list[tuple[int, int, float]]:
    """Two taste groups over the first N - cold items (the last ``cold`` have none)."""
    rng = np.random.default_rng(seed)
    out = []
    for u in range(users):
        pool = np.arange(0, 12) if u % 2 else np.arange(12, N - cold)
        for i in rng.choice(pool, size=6, replace=False):
            out.append((u, IDS[int(i)], float(rng.integers(1, 6))))
    return out


@pytest.fixture(scope="module")
def enc() -> FakeEncoder:
    return FakeEncoder()


@pytest.fixture(scope="module")
def hybrid(enc: FakeEncoder) -> Recommender:
    return Recommender(
        enc, TEXTS, IDS, interactions=interactions(), collab={"l2": 3.0, "text_weight": 0.5}
    )


def _ease_reference(
    inter: list[tuple[int, int, float]], vectors: np.ndarray, l2: float, text_weight: float
) -> tuple[np.ndarray, np.ndarray]:
    warm = np.array(sorted({IDS.index(i) for _, i, _ in inter}))
    users = sorted({u for u, _, _ in inter})
    x = np.zeros((len(users), len(warm)))
    for u, i, w in inter:
        x[users.index(u), list(warm).index(IDS.index(i))] += w
    x /= np.mean([w for _, _, w in inter])
    e = vectors[warm].astype(np.float64)
    g = x.T @ x + text_weight**2 * e @ e.T + l2 * np.eye(len(warm))
    p = np.linalg.inv(g)
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    return warm, b


@pytest.mark.parametrize("users", [8, 200])  # Woodbury (users < items) and the direct solve
@pytest.mark.parametrize("text_weight", [0.0, 0.7])
def test_ease_matches_numpy(enc: FakeEncoder, users: int, text_weight: float) -> None:
    inter = interactions(users)
    rec = Recommender(
        enc, TEXTS, IDS, interactions=inter, collab={"l2": 2.0, "text_weight": text_weight}
    )
    assert isinstance(rec.model, EASE)
    warm, b = _ease_reference(inter, rec.vectors, 2.0, text_weight)
    np.testing.assert_array_equal(rec.model.warm, warm)
    np.testing.assert_allclose(rec.model.b, b, atol=2e-5)


def test_blend_equals_the_documented_formula(enc: FakeEncoder) -> None:
    inter = interactions()
    settings: dict[str, Any] = {
        "popularity_weight": 0.3,
        "cf_weight": 0.8,
        "cold_weight": 2.0,
        "cf_warmup": 3.0,
    }
    rec = Recommender(
        enc, TEXTS, IDS, interactions=inter, recent=4, top_m=2, collab={"l2": 3.0}, **settings
    )
    assert isinstance(rec.model, EASE)
    history, weights = [101, 103, 114, 127], [4.0, 5.0, 2.0, 3.0]  # 127 has no interactions
    v = rec.vectors.astype(np.float64)
    rows = [IDS.index(h) for h in history]
    sims = (v[rows] @ v.T) * (np.array(weights) / 5.0)[:, None]
    content = np.sort(sims, axis=0)[-2:].mean(axis=0)
    pop = np.bincount([IDS.index(i) for _, i, _ in inter], minlength=N)
    prior = np.log1p(pop) / np.log1p(pop.max())
    m = rec.model
    scale = np.mean([w for _, _, w in inter])
    pos = [list(m.warm).index(r) if r in m.warm else -1 for r in rows]
    x = np.zeros(len(m.warm))
    for p, w in zip(pos, weights, strict=True):
        if p >= 0:
            x[p] += w / scale
    warm_cf = x @ np.asarray(m.b, dtype=np.float64)
    cf = (x @ m.r) @ v.T  # cold rows: the text map
    cf[m.warm] = warm_cf
    h = 3 / (3 + 3.0)  # three known history items, cf_warmup 3
    gain = np.where(np.isin(np.arange(N), m.warm), 0.8, 2.0) * h / warm_cf.max()
    expect = content + (0.3 + 0.8 * (1 - h)) * prior + gain * cf
    got = dict(rec.recommend(history, k=N, exclude_seen=False, weights=weights))
    for row, item in enumerate(IDS):
        assert got[item] == pytest.approx(expect[row], abs=1e-5)


def test_cold_items_get_signal_after_add_items(hybrid: Recommender, enc: FakeEncoder) -> None:
    rec = Recommender(enc, TEXTS, IDS, interactions=interactions(), collab={"l2": 3.0})
    model = rec.model
    rec.add_items(["a brand new item", "another new one"], [900, 901])
    assert rec.model is model  # no refit: EASE scores new rows through its text map
    assert len(rec) == N + 2
    history = [101, 105, 107]
    found = rec.recommend(history, k=N + 2, explain=True)
    new = [e for e in found if isinstance(e, Explanation) and e.item in (900, 901)]
    assert len(new) == 2
    for e in new:
        assert e.prior == 0.0  # no popularity yet
        assert any(c.via == "collaborative" and c.share != 0 for c in e.contributions)
    rec.replace(cold_weight=0.0)  # settings change needs no refit either


def test_explanations_add_up(hybrid: Recommender, enc: FakeEncoder) -> None:
    history, weights = [101, 103, 105, 120], [5.0, 1.0, 4.0, 3.0]
    for rec in (hybrid, hybrid.replace(profile="mean"), Recommender(enc, TEXTS, IDS, [1.0] * N)):
        plain = rec.recommend(history, k=6, weights=weights)
        explained = rec.recommend(history, k=6, weights=weights, explain=True)
        assert [(e.item, e.score) for e in explained] == plain
        for e in explained:
            assert isinstance(e, Explanation)
            assert {c.source for c in e.contributions} <= set(history)
            assert {c.via for c in e.contributions} <= {"content", "collaborative"}
            total = sum(c.share for c in e.contributions)
            assert total == pytest.approx(e.score - e.prior, abs=1e-5)
            shares = [c.share for c in e.contributions]
            assert shares == sorted(shares, reverse=True)
    # Free texts are sources too; a user with nothing usable is all prior.
    texts = hybrid.recommend([101], k=3, texts=["item 7"], explain=True)
    assert "item 7" in {c.source for e in texts for c in e.contributions}
    cold = hybrid.recommend([], k=3, explain=True)
    assert all(e.contributions == () and e.prior == e.score for e in cold)


def test_batch_equals_one_at_a_time(hybrid: Recommender) -> None:
    rng = np.random.default_rng(1)
    sizes = rng.integers(0, 8, size=25)
    histories = [list(rng.choice(IDS, size=int(n), replace=False)) for n in sizes]
    weights = [list(rng.uniform(0.5, 5, size=len(h))) for h in histories]
    exclude = [[IDS[0]] if i % 3 else None for i in range(25)]
    batch = hybrid.recommend_batch(histories, k=7, weights=weights, exclude=exclude)
    for h, w, e, b in zip(histories, weights, exclude, batch, strict=True):
        one = hybrid.recommend(h, k=7, weights=w, exclude=e)
        assert [i for i, _ in one] == [i for i, _ in b]
        np.testing.assert_allclose([s for _, s in one], [s for _, s in b], atol=1e-5)


@pytest.mark.parametrize("with_encoder", [True, False])
def test_save_load_round_trip(
    hybrid: Recommender, enc: FakeEncoder, tmp_path: Path, with_encoder: bool
) -> None:
    path = hybrid.save(tmp_path / "rec")
    config = json.loads((path / "recommender.json").read_text())
    assert config["collab"]["model"] == "ease"
    for name in config["collab"]["files"].values():
        assert (path / name).is_file()
    loaded = Recommender.load(path, enc if with_encoder else None)
    assert loaded.settings() == hybrid.settings()
    assert loaded.model is not None and loaded.model.kind == "ease"
    for history in ([101, 102], [115, 103, 104], []):
        assert loaded.recommend(history, k=5) == hybrid.recommend(history, k=5)
    if with_encoder:
        loaded.add_items(["fresh"], [999])
        assert 999 in [i for i, _ in loaded.recommend([101], k=N + 1)]


def test_from_catalog_derives_popularity(enc: FakeEncoder) -> None:
    catalog = ItemCatalog(enc.encode(TEXTS), IDS)
    rec = Recommender.from_catalog(catalog, interactions=[(1, 100), (2, 100), (2, 101)])
    assert rec.popularity is not None and rec.popularity[:3].tolist() == [2.0, 1.0, 0.0]
    assert rec.settings()["popularity_weight"] == 0.0  # the hybrid's default
    assert Recommender.from_catalog(catalog).settings()["popularity_weight"] == 1.0


def test_cold_and_text_only_users(hybrid: Recommender) -> None:
    assert len(hybrid.recommend([], k=5)) == 5  # popularity order
    by_text = hybrid.recommend([], k=3, texts=["item 4"])
    assert by_text[0][0] == 104


def test_empty_interactions_give_content_only(enc: FakeEncoder) -> None:
    with pytest.warns(UserWarning):
        rec = Recommender(enc, TEXTS, IDS, [1.0] * N, interactions=[])
    assert rec.model is None
    assert rec.recommend([101], k=3) == Recommender(enc, TEXTS, IDS, [1.0] * N).recommend(
        [101], k=3
    )


def test_bad_hybrid_settings(enc: FakeEncoder) -> None:
    with pytest.raises(ConfigError):
        Recommender(enc, TEXTS, IDS, interactions=interactions(), collab={"l2": -1.0})
    with pytest.raises(ConfigError):
        Recommender(enc, TEXTS, IDS, interactions=interactions(), collab={"nope": 1})
    with pytest.raises(ConfigError):
        Recommender(enc, TEXTS, IDS, interactions=interactions(), cf_weight=-1.0)
    with pytest.raises(InputValueError, match="not in the catalog"):
        Recommender(enc, TEXTS, IDS, interactions=[(1, 5555)])


def test_als_on_a_small_synthetic_set(enc: FakeEncoder) -> None:
    implicit = pytest.importorskip("implicit")
    del implicit
    inter = interactions(users=60)
    rec = Recommender(
        enc, TEXTS, IDS, interactions=inter, collab=CollabSettings(model="als", factors=8)
    )
    assert rec.model is not None and rec.model.kind == "als"
    # A user of the first taste group gets that group's items first.
    top = [i for i, _ in rec.replace(cf_weight=5.0).recommend([101, 103, 105, 107], k=5)]
    assert sum(i < 112 for i in top) >= 4
    explained = rec.recommend([101, 103], k=4, explain=True)
    for e in explained:
        total = sum(c.share for c in e.contributions)
        assert total == pytest.approx(e.score - e.prior, abs=1e-4)
    rec.add_items(["new als item"], [950])
    assert isinstance(rec.model, ALS) and len(rec.model.y) == N + 1
    batch = rec.recommend_batch([[101, 103], [115]], k=4)
    one = rec.recommend([101, 103], k=4)
    assert [i for i, _ in batch[0]] == [i for i, _ in one]
    np.testing.assert_allclose([s for _, s in batch[0]], [s for _, s in one], atol=1e-5)
