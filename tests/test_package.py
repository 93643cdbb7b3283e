"""Packaging promises: light import, no top-level pollution, the public API."""

from __future__ import annotations

import ast
import subprocess
import sys
import tempfile
from pathlib import Path

import bertrec
import bertrec.errors


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
    assert issubclass(bertrec.NotFoundError, FileNotFoundError)
    assert issubclass(bertrec.OutputError, OSError)
    for name in bertrec.__all__:
        obj = getattr(bertrec, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, bertrec.BertrecError)


REPO = Path(__file__).resolve().parents[1]
LIBRARY = ("bertrec", "export", "quantize", "runtime")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_runtime_reads_models_and_nothing_else() -> None:
    """runtime/ owns the model directory: no export/quantize, torch, Ray, HTTP, datasets,
    ranking or recommending code."""
    banned = (
        "bertrec.export",
        "bertrec.quantize",
        "bertrec.rank",
        "bertrec.recommend",
        "bertrec.jobs",
        "examples",
        "torch",
        "transformers",
        "ray",
        "pyarrow",
        "starlette",
        "fastapi",
        "uvicorn",
    )
    for path in sorted((REPO / "runtime").glob("*.py")):
        bad = [m for m in _imports(path) if m.split(".")[0] in banned or m.startswith(banned)]
        assert not bad, f"{path.name} imports {bad}"


def test_library_modules_stay_small() -> None:
    for room in LIBRARY:
        for path in sorted((REPO / room).rglob("*.py")):
            lines = len(path.read_text(encoding="utf-8").splitlines())
            assert lines <= 700, f"{path.relative_to(REPO)} has {lines} lines: it holds two jobs"


def test_a_small_error_hierarchy() -> None:
    errors = [
        obj
        for obj in vars(bertrec.errors).values()
        if isinstance(obj, type) and issubclass(obj, bertrec.BertrecError)
    ]
    assert len(errors) <= 10
