"""Packaging promises: light import, no top-level pollution, the public API."""

from __future__ import annotations

import subprocess
import sys
import tempfile

import bertrec


def _run(code: str) -> subprocess.CompletedProcess[str]:
    # From a neutral folder, so the repository root is not on sys.path.
    with tempfile.TemporaryDirectory() as cwd:
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd)


def test_import_does_not_load_torch_or_transformers() -> None:
    r = _run(
        "import sys, bertrec; bad = [m for m in ('torch', 'transformers', 'onnx', 'optimum') "
        "if m in sys.modules]; print(bad); assert not bad"
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_subpackages_are_not_top_level_modules() -> None:
    for name in ("runtime", "export", "quantize"):
        r = _run(f"import {name}")
        assert r.returncode != 0, f"`import {name}` should fail"


def test_subpackage_folders_refuse_a_top_level_import() -> None:
    import os

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run(
        [sys.executable, "-c", "import runtime"], capture_output=True, text=True, cwd=repo
    )
    assert r.returncode != 0 and "import bertrec.runtime" in r.stderr


def test_public_api_names_resolve() -> None:
    for name in bertrec.__all__:
        assert getattr(bertrec, name) is not None, name
    assert callable(bertrec.export_model) and callable(bertrec.add_variant)


def test_errors_subclass_builtins() -> None:
    assert issubclass(bertrec.ConfigError, ValueError)
    assert issubclass(bertrec.InputTypeError, TypeError)
    assert issubclass(bertrec.ModelNotFoundError, FileNotFoundError)
    assert issubclass(bertrec.OutputExistsError, FileExistsError)
    for name in bertrec.__all__:
        obj = getattr(bertrec, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, bertrec.BertrecError)
