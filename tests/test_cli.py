"""The `bertrec` command: subcommands, exit codes, error messages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

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
