"""The `bertrec` command: subcommands, exit codes, error messages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import bertrec
from bertrec.cli import main
from bertrec.runtime.manifest import read_manifest

PY = sys.executable


def test_export_quantize_info(
    tiny_bert_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "m"
    assert (
        main(
            [
                "export",
                str(tiny_bert_dir),
                str(out),
                "--precision",
                "fp32",
                "--pooling",
                "cls",
                "--no-normalize",
                "--max-length",
                "32",
            ]
        )
        == 0
    )
    m = read_manifest(out)
    assert (m.pooling, m.normalize, m.max_length, list(m.variants)) == ("cls", False, 32, ["fp32"])
    assert main(["quantize", str(out), "--precision", "int8"]) == 0
    assert "model.int8.onnx" in capsys.readouterr().out
    assert main(["info", str(out)]) == 0
    assert "min_cos=" in capsys.readouterr().out


def test_export_with_calibration_file(tiny_bert_dir: Path, tmp_path: Path) -> None:
    calib = tmp_path / "calib.txt"
    calib.write_text("\n".join(f"sentence number {i} about movies" for i in range(40)))
    assert (
        main(["export", str(tiny_bert_dir), str(tmp_path / "m"), "--calibration", str(calib)]) == 0
    )
    assert set(read_manifest(tmp_path / "m").variants) == {"fp32", "int8"}


def test_errors_exit_2_with_message(
    tiny_bert_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["export", str(tmp_path / "missing"), str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "o").mkdir()
    assert main(["export", str(tiny_bert_dir), str(tmp_path / "o")]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["export", str(tiny_bert_dir), str(tmp_path / "p"), "--max-length", "9999"]) == 2
    assert "position limit" in capsys.readouterr().err
    assert main(["quantize", str(tmp_path), "--precision", "int8"]) == 2
    assert "manifest.json" in capsys.readouterr().err
    assert main(["info", str(tmp_path / "nope")]) == 2


def test_argparse_rejects_unknown_choices() -> None:
    with pytest.raises(SystemExit) as exc:
        main(["export", "a", "b", "--pooling", "sum"])
    assert exc.value.code == 2


def test_console_script_help() -> None:
    bin_dir = Path(PY).parent
    exe = bin_dir / "bertrec"
    cmd = [str(exe)] if exe.exists() else [PY, "-m", "bertrec.cli"]
    out = subprocess.run([*cmd, "--help"], capture_output=True, text=True, check=True).stdout
    for sub in ("export", "quantize", "info", "demo"):
        assert sub in out


def test_check_records_bf16_fidelity_or_says_why_not(
    tiny_model_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import shutil

    import bertrec.quantize.checks as checks

    d = tmp_path / "m"
    shutil.copytree(tiny_model_dir, d)
    if checks.bf16_available():
        assert main(["check", str(d)]) == 0
        check = read_manifest(d).runtime_checks["openvino-bf16"]
        assert check["n"] > 100 and 0.99 < check["min_cos"] <= 1.0 + 1e-6
    monkeypatch.setattr(checks, "bf16_available", lambda: False)
    assert main(["check", str(d)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bf16 instructions" in err


def _cli(*args: str, code: str = "") -> subprocess.CompletedProcess[str]:
    """The CLI in a subprocess; ``code`` runs first (e.g. to hide an installed module)."""
    script = f"import sys\n{code}\nfrom bertrec.cli import main\nsys.exit(main(sys.argv[1:]))"
    return subprocess.run([PY, "-c", script, *args], capture_output=True, text=True)


def _one_line(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    return r.stderr


def test_version_and_help_show_defaults() -> None:
    r = _cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"bertrec {bertrec.__version__}"
    r = _cli("encode", "--help")
    assert r.returncode == 0
    assert "(default: auto)" in r.stdout and "(default: 4096)" in r.stdout
    assert "--progress" in r.stdout and "--no-progress" in r.stdout


def test_verbose_goes_before_or_after_the_command(tiny_model_dir: Path) -> None:
    for args in (["-v", "info", str(tiny_model_dir)], ["info", str(tiny_model_dir), "-v"]):
        assert _cli(*args).returncode == 0


def test_unknown_precision_names_the_choices(tiny_model_dir: Path, tmp_path: Path) -> None:
    texts = tmp_path / "t.jsonl"
    texts.write_text('{"id": 1, "text": "a"}\n')
    err = _one_line(
        _cli(
            "encode",
            str(texts),
            str(tmp_path / "o"),
            "--model",
            str(tiny_model_dir),
            "--precision",
            "int4",
        )
    )
    assert "unknown precision 'int4'; choose from auto, fp32, int8, fp16" in err
    assert "bertrec quantize" not in err


def test_a_missing_extra_is_named(tiny_bert_dir: Path, tmp_path: Path) -> None:
    hide = "sys.modules['torch'] = None"
    err = _one_line(_cli("export", str(tiny_bert_dir), str(tmp_path / "m"), code=hide))
    assert "pip install 'bertrec[export]'" in err


def test_info_verify_checks_every_file(tiny_model_dir: Path, tmp_path: Path) -> None:
    import shutil

    d = Path(shutil.copytree(tiny_model_dir, tmp_path / "m"))
    r = _cli("info", str(d), "--verify")
    assert r.returncode == 0 and "sha256 ok" in r.stdout
    f = d / "model.fp32.onnx"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    assert "modified or truncated" in _one_line(_cli("info", str(d), "--verify"))
    assert _cli("info", str(d)).returncode == 0  # without --verify: the manifest only


def test_an_empty_input_says_so(tiny_model_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    r = _cli("encode", str(empty), str(tmp_path / "o"), "--model", str(tiny_model_dir))
    assert r.returncode == 0, r.stderr
    assert "has no rows" in r.stderr


def test_demo_plot_draws_the_catalog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("matplotlib")
    from bertrec import ItemCatalog, Recommender
    from examples.movielens.demo import plot_catalog

    rng = np.random.default_rng(0)
    rec = Recommender.from_catalog(ItemCatalog(rng.standard_normal((50, 8)), list(range(50))))
    out = plot_catalog(rec, [1, 2, 3], [4, 5], {5}, tmp_path / "p.png", user=7)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
