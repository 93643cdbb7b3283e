"""The sentence-transformers OpenVINO peer: a worker process in a venv of its own
(optimum-intel needs another optimum than bertrec's exporter), spoken to over JSON lines."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import selectors
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import bench_cache, log
from bench.throughput.base import Config, Run, System, SystemFailed
from bench.throughput.settings import Settings, ShapeSettings

HERE = Path(__file__).resolve().parent / "st_openvino"
OV_REQUIREMENTS = HERE / "requirements.txt"
OV_NODEPS = HERE / "nodeps.txt"
OV_WORKER = HERE / "worker.py"


class PeerSystem(System):
    """A system served by a worker process in its own venv, over JSON lines."""

    def __init__(
        self,
        name: str,
        label: str,
        python: Path,
        worker: Path,
        load: dict[str, Any],
        configs: Sequence[Config],
        common: Config,
        log_path: Path,
        timeout_s: float = 900.0,
    ) -> None:
        self._tmp = Path(tempfile.mkdtemp(prefix="bertrec-peer-"))
        self._timeout = timeout_s
        self._log_path = log_path
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
        self._log = log_path.open("w", encoding="utf-8")
        self._proc = subprocess.Popen(
            [str(python), str(worker)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env=env,
        )
        info = self._call({"op": "load", **load})["info"]
        super().__init__(name, label, info, configs, common, fn=lambda t, c: None)

    def _call(self, req: dict[str, Any]) -> dict[str, Any]:
        proc = self._proc
        assert proc.stdin is not None and proc.stdout is not None  # set by Popen(PIPE)
        try:
            proc.stdin.write(json.dumps(req) + "\n")
            proc.stdin.flush()
        except BrokenPipeError as exc:
            raise SystemFailed(f"peer worker exited ({proc.poll()}): {self._tail()}") from exc
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        ready = sel.select(self._timeout)
        sel.close()
        if not ready:
            raise SystemFailed(f"peer worker gave no answer to {req['op']!r} in {self._timeout}s")
        line = proc.stdout.readline()
        if not line:
            raise SystemFailed(f"peer worker exited ({proc.wait()}): {self._tail()}")
        reply: dict[str, Any] = json.loads(line)
        if not reply.get("ok"):
            raise SystemFailed(str(reply.get("error")))
        return reply

    def _tail(self, n: int = 600) -> str:
        self._log.flush()
        text = self._log_path.read_text(encoding="utf-8", errors="replace")
        return text[-n:].strip() or "(no stderr)"

    def prepare(self, texts: list[str]) -> None:
        self.texts = texts
        self._call({"op": "texts", "texts": texts})

    def encode(self, start: int, stop: int, config: Config, keep: bool = False) -> Run:
        save = str(self._tmp / "emb.npy") if keep else None
        reply = self._call(
            {
                "op": "encode",
                "start": start,
                "stop": stop,
                "batch_size": config.batch_size,
                "save": save,
            }
        )
        emb = np.load(save).astype(np.float32) if save else None
        return Run(float(reply["seconds"]), float(reply["cpu_s"]), emb)

    def latency(self, indices: Sequence[int]) -> list[float]:
        reply = self._call({"op": "latency", "indices": [int(i) for i in indices]})
        return [float(x) for x in reply["seconds"]]

    def close(self) -> None:
        with contextlib.suppress(Exception):
            assert self._proc.stdin is not None
            self._proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
        self._log.close()
        shutil.rmtree(self._tmp, ignore_errors=True)


def _requirements_pin(path: Path, package: str) -> str:
    for line in path.read_text(encoding="utf-8").splitlines():
        spec = line.split("#", 1)[0].strip()
        if spec.replace(" ", "").startswith(f"{package}=="):
            return spec
    raise ValueError(f"{path} pins no {package}==...; add the CPU wheel's version")


def peer_venv(build: bool) -> tuple[Path | None, str]:
    """The python of the sentence-transformers + optimum-intel venv, and how it was got.

    Built once into ``bench_cache()/venv-st-openvino`` (a few minutes, ~1.6 GB): torch's
    CPU wheel first, then the requirements, then optimum-intel without its dependencies
    (st_openvino/requirements.txt says why).
    """
    venv = bench_cache() / "venv-st-openvino"
    python = venv / "bin" / "python"
    h = hashlib.sha256(sys.version.encode())
    for f in (OV_REQUIREMENTS, OV_NODEPS):
        h.update(f.read_bytes())
    want = h.hexdigest()
    stamp = venv / ".bench-stamp"
    if python.is_file() and stamp.is_file() and stamp.read_text(encoding="utf-8") == want:
        return python, "cached"
    if not build:
        return None, f"peer venv {venv} not built (--quick and --no-peer-venv never build it)"
    log_path = bench_cache() / "venv-st-openvino.log"
    log(f"building the peer venv {venv} (once, a few minutes; log: {log_path}) ...")
    shutil.rmtree(venv, ignore_errors=True)
    pip = [str(python), "-m", "pip", "install", "-q"]
    steps = [
        [sys.executable, "-m", "venv", str(venv)],
        [*pip, _requirements_pin(OV_REQUIREMENTS, "torch")],
        [*pip, "-r", str(OV_REQUIREMENTS)],
        [*pip, "--no-deps", "-r", str(OV_NODEPS)],
    ]
    with log_path.open("w", encoding="utf-8") as out:
        for cmd in steps:
            out.write(f"$ {' '.join(cmd)}\n")
            out.flush()
            rc = subprocess.call(cmd, stdout=out, stderr=subprocess.STDOUT)
            if rc != 0:
                tail = log_path.read_text(encoding="utf-8", errors="replace")[-800:]
                return None, f"building the peer venv failed: `{' '.join(cmd)}` exited {rc}: {tail}"
    stamp.write_text(want, encoding="utf-8")
    return python, "built now"


def st_openvino_system(shape: ShapeSettings, settings: Settings, source: Path) -> System:
    """``SentenceTransformer(source, backend="openvino")`` served by the peer venv's worker."""
    python, how = peer_venv(settings.build_peer_venv)
    if python is None:
        raise SystemFailed(how)
    system = PeerSystem(
        "st-openvino",
        "sentence-transformers openvino (own venv)",
        python,
        OV_WORKER,
        {
            "model_dir": str(source),
            "export_dir": str(bench_cache(shape.model) / "st-openvino"),
            "threads": settings.threads,
        },
        [Config(batch_size=b) for b in shape.batch_sizes],
        Config(batch_size=shape.common_batch or settings.common_batch),
        log_path=bench_cache() / "st-openvino-worker.log",
    )
    system.info["venv"] = how
    # OpenVINO picks the inference precision itself (bf16 on CPUs with bf16 units).
    hint = str(system.info.get("INFERENCE_PRECISION_HINT", ""))
    precision = "bf16" if "bf16" in hint or "bfloat16" in hint else "fp32" if "f32" in hint else "?"
    system.info["precision"] = precision
    system.label = f"sentence-transformers openvino {precision}"
    return system
