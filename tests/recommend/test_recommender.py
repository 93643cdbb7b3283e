"""Recommender (scoring, fallbacks, persistence, growth) with a counting fake encoder;
the real MiniLM only under ``slow``."""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bertrec import (
    ConfigError,
    FileFormatError,
    InputTypeError,
    InputValueError,
    ItemCatalog,
    ModelMismatchError,
    NotFoundError,
    OutputError,
    Recommender,
)
from bertrec.rank import SUGGESTED_DIVERSITY


class FakeEncoder:
    """Deterministic pseudo-embeddings (seeded by the text), counting what it encodes."""

    def __init__(self, dim: int = 16, fingerprint: str = "fake-model-1") -> None:
        self.dim = dim
        self.fingerprint = fingerprint
        self.calls: list[list[str]] = []

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(list(texts))
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            rng = np.random.default_rng(zlib.crc32(t.encode("utf-8")))
            v = rng.standard_normal(self.dim)
            out[i] = v / np.linalg.norm(v)
        return out

    @property
    def encoded(self) -> list[str]:
        return [t for call in self.calls for t in call]


TEXTS = [f"item number {i}" for i in range(30)]
IDS = [100 + i for i in range(30)]
POP = [float(30 - i) for i in range(30)]  # item 100 is the most popular


@pytest.fixture()
def enc() -> FakeEncoder:
    return FakeEncoder()


@pytest.fixture()
def rec(enc: FakeEncoder) -> Recommender:
    return Recommender(enc, TEXTS, IDS, popularity=POP)


def test_recommend_excludes_history_and_sorts(rec: Recommender) -> None:
    out = rec.recommend([101, 105, 110], k=5)
    assert len(out) == 5
    ids = [i for i, _ in out]
    scores = [s for _, s in out]
    assert not {101, 105, 110} & set(ids)
    assert scores == sorted(scores, reverse=True)
    assert all(isinstance(i, int) for i in ids)
    kept = rec.recommend([101], k=30, exclude_seen=False, exclude=[102, 999])
    assert 101 in [i for i, _ in kept] and 102 not in [i for i, _ in kept]
    assert len(kept) == 29


def test_scores_match_the_documented_formula(enc: FakeEncoder) -> None:
    rec = Recommender(enc, TEXTS, IDS, popularity=POP, popularity_weight=0.5, recent=3, top_m=2)
    history = [101, 102, 103, 104]
    v = rec.vectors.astype(np.float64)
    rows = [IDS.index(h) for h in history][-3:]
    sims = v[rows] @ v.T
    content = np.sort(sims, axis=0)[-2:].mean(axis=0)
    prior = np.log1p(POP) / np.log1p(max(POP))
    expect = content + 0.5 * prior
    got = dict(rec.recommend(history, k=30, exclude_seen=False))
    for row, item in enumerate(IDS):
        assert got[item] == pytest.approx(expect[row], abs=1e-5)


def test_mean_profile_uses_the_recency_decayed_user_vector(enc: FakeEncoder) -> None:
    rec = Recommender(enc, TEXTS, IDS, popularity=POP, profile="mean", half_life=2.0)
    history, weights = [101, 102, 103], [1.0, 2.0, 0.5]
    u = rec.user_vector(history, weights)
    v = rec.vectors.astype(np.float64)
    w = np.array(weights) * 0.5 ** (np.array([2, 1, 0]) / 2.0)
    ref = (w[:, None] * v[[1, 2, 3]]).sum(axis=0)
    np.testing.assert_allclose(u, ref / np.linalg.norm(ref), atol=1e-6)
    prior = np.log1p(POP) / np.log1p(max(POP))
    got = dict(rec.recommend(history, k=30, weights=weights, exclude_seen=False))
    for row, item in enumerate(IDS):
        assert got[item] == pytest.approx(v[row] @ u + prior[row], abs=1e-5)


def test_free_texts_count_as_history(rec: Recommender, enc: FakeEncoder) -> None:
    # A text equal to an item's text points at that item: it should rank first.
    out = rec.recommend([], k=1, texts=["item number 17"])
    assert out[0][0] == 117
    assert enc.encoded[-1] == "item number 17"
    u = rec.user_vector([], texts=["item number 3"])
    np.testing.assert_allclose(u, rec.vectors[3], atol=1e-6)


def test_empty_history_falls_back_to_popularity(enc: FakeEncoder) -> None:
    rec = Recommender(enc, TEXTS, IDS, popularity=POP, popularity_weight=0.0)
    assert [i for i, _ in rec.recommend([], k=3)] == [100, 101, 102]
    assert [i for i, _ in rec.recommend([], k=2, exclude=[100])] == [101, 102]
    # All-zero weights carry no signal either.
    assert [i for i, _ in rec.recommend([105], k=2, weights=[0.0])] == [100, 101]
    bare = Recommender(enc, TEXTS, IDS)
    with pytest.raises(InputValueError, match="no popularity to fall back on"):
        bare.recommend([])
    with pytest.raises(InputValueError, match="history is empty"):
        rec.user_vector([])


def test_batch_equals_single(rec: Recommender) -> None:
    histories = [[101, 102], [], [120, 103, 104]]
    excl = [[110], None, [100]]
    batch = rec.recommend_batch(histories, k=4, exclude=excl, diversity=0.3)
    for h, e, got in zip(histories, excl, batch, strict=True):
        assert got == rec.recommend(h, k=4, exclude=e, diversity=0.3)
    with pytest.raises(InputValueError, match=r"histories\[1\]: 1 id\(s\) not in the catalog"):
        rec.recommend_batch([[101], [555]])
    with pytest.raises(InputValueError, match="exclude has 1 entries for 2 histories"):
        rec.recommend_batch([[101], [102]], exclude=[[1]])


def test_diversity_changes_membership_not_order(rec: Recommender) -> None:
    plain = rec.recommend([101, 102], k=8)
    diverse = rec.recommend([101, 102], k=8, diversity=0.9)
    assert len({i for i, _ in diverse}) == 8
    assert diverse[0] == plain[0]
    assert {i for i, _ in diverse} != {i for i, _ in plain}
    # The picks are listed in score order, best first.
    scores = [s for _, s in diverse]
    assert scores == sorted(scores, reverse=True)
    row = {item: i for i, item in enumerate(IDS)}

    def ild(out: list[tuple[int, float]]) -> float:
        v = rec.vectors[[row[i] for i, _ in out]].astype(np.float64)
        return float(1 - ((v @ v.T).sum() - len(v)) / (len(v) * (len(v) - 1)))

    assert ild(diverse) > ild(plain)
    assert rec.recommend([101, 102], k=8, diversity=0.0) == plain
    assert ild(rec.recommend([101, 102], k=8, diversity=SUGGESTED_DIVERSITY)) >= ild(plain)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"history": [999]}, InputValueError, "not in the catalog: 999"),
        ({"history": "101"}, InputTypeError, "list of item ids"),
        ({"history": None}, InputTypeError, "list of item ids"),
        ({"history": [101], "k": 0}, ConfigError, "k must be >= 1"),
        ({"history": [101], "diversity": 2.0}, ConfigError, "diversity"),
        ({"history": [101], "weights": [1.0, 2.0]}, InputValueError, "one each"),
        ({"history": [101], "weights": [-1.0]}, InputValueError, ">= 0"),
        ({"history": [101], "weights": [float("nan")]}, InputValueError, "finite"),
        ({"history": [101], "texts": [b"x"]}, InputTypeError, r"texts\[0\] is bytes"),
    ],
)
def test_bad_recommend_inputs(
    rec: Recommender, kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        rec.recommend(**kwargs)


def test_bad_constructor_inputs(enc: FakeEncoder) -> None:
    with pytest.raises(InputValueError, match="2 item_texts and 3 item_ids"):
        Recommender(enc, ["a", "b"], [1, 2, 3])
    with pytest.raises(InputValueError, match="catalog is empty"):
        Recommender(enc, [], [])
    with pytest.raises(InputValueError, match="duplicate id 1"):
        Recommender(enc, ["a", "b"], [1, 1])
    with pytest.raises(InputTypeError, match=r"item_texts\[1\] is int"):
        Recommender(enc, ["a", 2], [1, 2])  # type: ignore[list-item]
    with pytest.raises(InputValueError, match="finite and >= 0"):
        Recommender(enc, ["a", "b"], [1, 2], popularity=[1, -1])
    with pytest.raises(InputValueError, match="one number per item"):
        Recommender(enc, ["a", "b"], [1, 2], popularity=[1])
    with pytest.raises(ConfigError, match="unknown profile"):
        Recommender(enc, ["a"], [1], profile="svd")
    with pytest.raises(ConfigError, match="popularity_weight"):
        Recommender(enc, ["a"], [1], popularity_weight=-1)
    with pytest.raises(ConfigError, match="recent"):
        Recommender(enc, ["a"], [1], recent=0)
    assert enc.calls == [], "bad input must fail before any encoding"


def test_save_load_round_trip(rec: Recommender, enc: FakeEncoder, tmp_path: Path) -> None:
    path = rec.save(tmp_path / "rec")
    assert sorted(p.name for p in path.iterdir()) == [
        "catalog.json",
        "ids.json",
        "popularity.npy",
        "recommender.json",
        "vectors.npy",
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["rec"], "no temporary directory left"
    loaded = Recommender.load(path, enc)
    assert _is_memory_mapped(loaded.vectors)
    assert loaded.settings() == rec.settings()
    for history in ([101, 102], [], [129]):
        assert loaded.recommend(history, k=5) == rec.recommend(history, k=5)
    np.testing.assert_array_equal(loaded.popularity, POP)
    in_memory = Recommender.load(path, enc, mmap=False)
    assert not _is_memory_mapped(in_memory.vectors)
    assert in_memory.recommend([101]) == rec.recommend([101])


def _is_memory_mapped(a: Any) -> bool:
    while a is not None:
        if isinstance(a, np.memmap):
            return True
        a = getattr(a, "base", None)
    return False


def test_save_refuses_to_overwrite_unless_asked(rec: Recommender, tmp_path: Path) -> None:
    path = rec.save(tmp_path / "rec")
    with pytest.raises(OutputError, match="overwrite=True"):
        rec.save(path)
    rec.add_items(["a new film"], [500], popularity=[3])
    rec.save(path, overwrite=True)
    assert 500 in json.loads((path / "ids.json").read_text())
    assert [p.name for p in tmp_path.iterdir()] == ["rec"]


def test_save_rejects_unserializable_ids(enc: FakeEncoder, tmp_path: Path) -> None:
    rec = Recommender(enc, ["a", "b"], [("x", 1), ("y", 2)])
    with pytest.raises(InputTypeError, match="int and str ids"):
        rec.save(tmp_path / "rec")
    assert list(tmp_path.iterdir()) == []


def test_load_with_another_model_is_refused(rec: Recommender, tmp_path: Path) -> None:
    path = rec.save(tmp_path / "rec")
    with pytest.raises(ModelMismatchError, match="same model"):
        Recommender.load(path, FakeEncoder(fingerprint="another-model"))


def test_load_without_an_encoder_serves_id_histories(rec: Recommender, tmp_path: Path) -> None:
    loaded = Recommender.load(rec.save(tmp_path / "rec"))
    assert loaded.encoder is None
    assert loaded.recommend([101, 102], k=5) == rec.recommend([101, 102], k=5)
    with pytest.raises(ConfigError, match="free texts need an encoder"):
        loaded.recommend([101], texts=["a thriller"])
    with pytest.raises(ConfigError, match="add_items encodes texts"):
        loaded.add_items(["x"], [999])


def test_unknown_history_ids_error_or_skip(rec: Recommender) -> None:
    with pytest.raises(InputValueError, match="2 id\\(s\\) not in the catalog: 7, 8"):
        rec.recommend([101, 7, 8])
    skipped = rec.recommend([101, 7, 8], on_unknown="skip", weights=[2.0, 1.0, 1.0])
    assert skipped == rec.recommend([101], weights=[2.0])
    with pytest.raises(ConfigError, match="unknown on_unknown 'drop'"):
        rec.recommend([101], on_unknown="drop")


@pytest.mark.parametrize("profile", ["knn", "mean"])
@pytest.mark.parametrize("diversity", [0.0, 0.7])
def test_batch_equals_one_user_at_a_time(enc: FakeEncoder, profile: str, diversity: float) -> None:
    rec = Recommender(enc, TEXTS, IDS, popularity=POP, profile=profile, top_m=3, recent=4)
    rng = np.random.default_rng(1)
    histories = [
        rng.choice(IDS, size=int(n), replace=False).tolist() for n in rng.integers(0, 9, 40)
    ]
    weights = [
        rng.uniform(0, 2, len(h)).tolist() if i % 3 else None for i, h in enumerate(histories)
    ]
    exclude = [[IDS[i % 30]] if i % 2 else None for i in range(len(histories))]
    batch = rec.recommend_batch(
        histories, k=6, exclude=exclude, diversity=diversity, weights=weights
    )
    for h, w, ex, got in zip(histories, weights, exclude, batch, strict=True):
        one = rec.recommend(h, k=6, exclude=ex, diversity=diversity, weights=w)
        assert [i for i, _ in got] == [i for i, _ in one]
        np.testing.assert_allclose([s for _, s in got], [s for _, s in one], atol=1e-6)


def test_store_permissions_follow_the_umask(rec: Recommender, tmp_path: Path) -> None:
    import os

    old = os.umask(0o022)
    try:
        path = rec.save(tmp_path / "rec")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o755
    assert {f.stat().st_mode & 0o777 for f in path.iterdir()} == {0o644}


def test_tampered_store_is_a_file_format_error(rec: Recommender, tmp_path: Path) -> None:
    path = rec.save(tmp_path / "rec")
    vectors = (path / "vectors.npy").read_bytes()
    (path / "vectors.npy").write_bytes(vectors[: len(vectors) // 2])
    with pytest.raises(FileFormatError, match="vectors.npy"):
        Recommender.load(path)
    np.save(path / "vectors.npy", np.array([{"a": 1}] * 30, dtype=object))
    with pytest.raises(FileFormatError, match="vectors.npy"):
        Recommender.load(path)
    np.save(path / "vectors.npy", np.ones((30, 16), dtype=np.float64))
    with pytest.raises(FileFormatError, match="expected float32"):
        Recommender.load(path)
    np.save(path / "vectors.npy", np.full((30, 16), np.nan, dtype=np.float32))
    with pytest.raises(FileFormatError, match="NaN"):
        Recommender.load(path)


def test_load_errors(rec: Recommender, enc: FakeEncoder, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        Recommender.load(tmp_path / "nothing", enc)
    path = rec.save(tmp_path / "rec")
    config = json.loads((path / "recommender.json").read_text())
    (path / "recommender.json").write_text(json.dumps({**config, "schema_version": 99}))
    with pytest.raises(FileFormatError, match="schema_version 99"):
        Recommender.load(path, enc)
    (path / "recommender.json").write_text("{not json")
    with pytest.raises(FileFormatError, match="not valid JSON"):
        Recommender.load(path, enc)
    settings = {**config["settings"], "shrinkage": 3}
    (path / "recommender.json").write_text(json.dumps({**config, "settings": settings}))
    with pytest.raises(FileFormatError, match="settings must be an object with keys"):
        Recommender.load(path, enc)
    settings = {**config["settings"], "top_m": -2}
    (path / "recommender.json").write_text(json.dumps({**config, "settings": settings}))
    with pytest.raises(FileFormatError, match="top_m must be >= 1"):
        Recommender.load(path, enc)
    (path / "recommender.json").write_text(json.dumps(config))
    (path / "vectors.npy").unlink()
    with pytest.raises(NotFoundError, match="vectors.npy"):
        Recommender.load(path, enc)


def test_add_items_encodes_only_new_items(rec: Recommender, enc: FakeEncoder) -> None:
    assert enc.encoded == TEXTS
    rec.add_items(["a brand new film", "another one"], [900, 901], popularity=[1000, 0])
    assert enc.calls[-1] == ["a brand new film", "another one"]
    assert len(enc.encoded) == len(TEXTS) + 2
    assert len(rec) == 32
    # The new, very popular item now leads the cold-start list.
    assert rec.recommend([], k=1)[0][0] == 900
    # Its own text is the best content match of the new, unpopular one: 1.0 + 0 * prior.
    scores = dict(rec.recommend([], k=32, texts=["another one"]))
    assert scores[901] == pytest.approx(1.0, abs=1e-5)
    before = len(enc.calls)
    with pytest.raises(InputValueError, match="already in the catalog"):
        rec.add_items(["x"], [900])
    with pytest.raises(InputValueError, match="duplicate id 7"):
        rec.add_items(["x", "y"], [7, 7])
    with pytest.raises(InputValueError, match="1 texts and 2 ids"):
        rec.add_items(["x"], [7, 8])
    assert len(enc.calls) == before, "rejected additions must not be encoded"


def test_add_items_after_load(rec: Recommender, enc: FakeEncoder, tmp_path: Path) -> None:
    loaded = Recommender.load(rec.save(tmp_path / "rec"), enc)
    loaded.add_items(["late arrival"], [700])
    assert loaded.popularity[-1] == 0  # type: ignore[index]
    assert dict(loaded.recommend([], k=31, texts=["late arrival"]))[700] == pytest.approx(1.0)
    bare = Recommender(enc, ["a"], [1])
    with pytest.raises(InputValueError, match="no popularity"):
        bare.add_items(["b"], [2], popularity=[1])


def test_from_vectors_checks_the_dimension(enc: FakeEncoder) -> None:
    with pytest.raises(InputValueError, match="dimension 8, the encoder 16"):
        Recommender.from_vectors(enc, np.ones((3, 8)), [1, 2, 3])


@pytest.mark.slow
def test_real_model_recommends_the_sequel(minilm_model_dir: Path, tmp_path: Path) -> None:
    from bertrec import Encoder

    encoder = Encoder(minilm_model_dir, precision="fp32", device="cpu")
    texts = [
        "Toy Story (1995). Genres: Adventure, Animation, Children, Comedy.",
        "Toy Story 2 (1999). Genres: Adventure, Animation, Children, Comedy.",
        "Heat (1995). Genres: Action, Crime, Thriller.",
        "Sense and Sensibility (1995). Genres: Drama, Romance.",
        "Alien (1979). Genres: Horror, Sci-Fi.",
    ]
    rec = Recommender(encoder, texts, ["ts", "ts2", "heat", "sense", "alien"])
    assert rec.recommend(["ts"], k=1)[0][0] == "ts2"
    path = rec.save(tmp_path / "rec")
    assert Recommender.load(path, encoder).recommend(["ts"], k=4) == rec.recommend(["ts"], k=4)


@pytest.mark.slow
def test_real_models_do_not_mix(
    minilm_model_dir: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    from bertrec import Encoder

    real = Encoder(minilm_model_dir, precision="fp32", device="cpu")
    tiny = Encoder(tiny_model_dir, precision="fp32", device="cpu")
    path = Recommender(tiny, ["a film", "another film"], [1, 2]).save(tmp_path / "rec")
    with pytest.raises(ModelMismatchError):
        Recommender.load(path, real)


def test_mean_profile_of_cancelling_vectors_is_an_error_not_nan() -> None:
    catalog = ItemCatalog(np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]]), [1, 2, 3], [1, 1, 1])
    rec = Recommender.from_catalog(catalog, profile="mean", half_life=1e9)
    with pytest.raises(InputValueError, match="cancel out"):
        rec.recommend([1, 2])
    with pytest.raises(InputValueError, match="cancel out"):
        rec.user_vector([1, 2])
    # The knn profile has no mean to cancel: it still ranks.
    assert [i for i, _ in Recommender.from_catalog(catalog).recommend([1, 2], k=1)] == [3]
