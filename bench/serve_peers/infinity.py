"""The infinity-emb peer of bench/serve_load.py: a venv of its own in the cache (like the
sentence-transformers OpenVINO peer of bench/throughput) and the command that serves
all-MiniLM-L6-v2 from the local folder with infinity's fastest CPU engine."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from bench.common import bench_cache, log
from bench.throughput.openvino_peer import _requirements_pin

HERE = Path(__file__).resolve().parent
REQUIREMENTS = HERE / "infinity-requirements.txt"
LAUNCH = HERE / "infinity_launch.py"
VENV_NAME = "venv-infinity"
# infinity's optimum engine picks a file with "quantize" in its name on the CPU.
INT8_NAME = "model_quantized.onnx"


def infinity_venv(build: bool) -> tuple[Path | None, str]:
    """The python of the peer venv, and how it was got (or why not).

    Built once into ``bench_cache()/venv-infinity`` (a few minutes): torch's CPU wheel
    first, then the requirements; rebuilt when they or the Python version change.
    """
    venv = bench_cache() / VENV_NAME
    python = venv / "bin" / "python"
    command = venv / "bin" / "infinity_emb"  # installed last: its presence says "complete"
    want = hashlib.sha256(sys.version.encode() + REQUIREMENTS.read_bytes()).hexdigest()
    stamp = venv / ".bench-stamp"
    if command.is_file() and stamp.is_file() and stamp.read_text(encoding="utf-8") == want:
        return python, "cached"
    if not build:
        return None, f"peer venv {venv} not built (--quick and --no-peer-venv never build it)"
    log_path = bench_cache() / f"{VENV_NAME}.log"
    log(f"building the infinity venv {venv} (once, a few minutes; log: {log_path}) ...")
    shutil.rmtree(venv, ignore_errors=True)
    pip = [str(python), "-m", "pip", "install", "-q"]
    steps = [
        [sys.executable, "-m", "venv", str(venv)],
        [*pip, _requirements_pin(REQUIREMENTS, "torch")],
        [*pip, "-r", str(REQUIREMENTS)],
    ]
    with log_path.open("w", encoding="utf-8") as out:
        for cmd in steps:
            out.write(f"$ {' '.join(cmd)}\n")
            out.flush()
            rc = subprocess.call(cmd, stdout=out, stderr=subprocess.STDOUT)
            if rc != 0:
                tail = log_path.read_text(encoding="utf-8", errors="replace")[-800:]
                failed = f"`{' '.join(cmd)}` exited {rc}"
                return None, f"building the infinity venv failed: {failed}: {tail}"
    stamp.write_text(want, encoding="utf-8")
    return python, "built now"


def infinity_model_dir(source: Path, threads: int) -> Path:
    """The local sentence-transformers folder with the int8 ONNX model that infinity's
    optimum engine loads: sentence-transformers' own avx512_vnni export of ``source``
    (bench/throughput's, made once), as the only ``.onnx`` file, at the top of the folder
    and named so infinity prefers it. Weights are copied, never downloaded."""
    from bench.throughput.peers import st_onnx_dir

    onnx_src = st_onnx_dir(source, "minilm", threads) / "onnx" / "model_qint8_avx512_vnni.onnx"
    out = bench_cache("minilm") / "infinity"
    target = out / INT8_NAME
    if target.is_file():
        return out
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(source, out)
    shutil.copyfile(onnx_src, target)
    return out


def infinity_command(
    python: Path, model_dir: Path, port: int, batch_size: int = 32
) -> tuple[list[str], dict[str, str]]:
    """The command line and environment that serve ``model_dir`` on loopback ``port``
    (infinity's own command, through ``infinity_launch.py``). Run it in ``model_dir``:
    given a relative folder, infinity names the ONNX file as optimum expects it (given an
    absolute one, it passes a path where optimum wants a file name, and fails)."""
    cmd = [
        str(python),
        str(LAUNCH),
        "v2",
        "--model-id",
        ".",
        "--served-model-name",
        "all-MiniLM-L6-v2",
        "--engine",
        "optimum",
        # all-MiniLM-L6-v2 mean-pools (1_Pooling/config.json); infinity's "auto" does not
        # read that file for its ONNX engine.
        "--pooling-method",
        "mean",
        "--device",
        "cpu",
        "--batch-size",
        str(batch_size),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(
        {
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "INFINITY_ANONYMOUS_USAGE_STATS": "0",
            "DO_NOT_TRACK": "1",
        }
    )
    return cmd, env
