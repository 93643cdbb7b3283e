"""Worker for infinity-emb's engine (``AsyncEmbeddingEngine``, optimum engine on the CPU),
run inside infinity's own venv (it pins numpy<2 and optimum 1.x).

bench/throughput/infinity_peer.py starts it and talks the JSON-lines protocol of
st_openvino/worker.py (load, texts, encode, latency, quit); times are taken in here around
``engine.embed`` alone. Only the standard library, numpy and the venv's own packages are
imported: this file must not import bertrec or bench.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
import traceback
from typing import Any

_PROTOCOL = sys.stdout
sys.stdout = sys.stderr
# The torch 2.13 shim that lets infinity's optimum engine import (bench/serve_peers).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "serve_peers"))  # fmt: skip
from infinity_shim import restore_opset14_helpers  # noqa: E402

restore_opset14_helpers()


class Worker:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.engines: dict[int, Any] = {}
        self.model_dir = ""
        self.engine_name = "optimum"
        self.texts: list[str] = []

    def engine(self, batch_size: int) -> Any:
        """One started engine per batch size (infinity fixes it when the engine is made)."""
        if batch_size not in self.engines:
            from infinity_emb import AsyncEmbeddingEngine, EngineArgs

            args = EngineArgs(
                model_name_or_path=self.model_dir,
                engine=self.engine_name,
                device="cpu",
                batch_size=batch_size,
                # As the serving peer: MiniLM's sentence-transformers pooling is the mean
                # (left to itself, the optimum engine's ONNX model does not say so).
                pooling_method="mean",
                model_warmup=False,
            )
            engine = AsyncEmbeddingEngine.from_args(args)
            self.loop.run_until_complete(engine.astart())
            self.engines[batch_size] = engine
        return self.engines[batch_size]

    def embed(self, texts: list[str], batch_size: int) -> Any:
        engine = self.engine(batch_size)
        embeddings, _ = self.loop.run_until_complete(engine.embed(sentences=texts))
        return embeddings

    def load(self, model_dir: str, batch_size: int) -> dict[str, Any]:
        import importlib.metadata

        import onnxruntime as ort

        # infinity's optimum engine finds its ONNX file only relative to the working
        # directory (as the serving peer runs it: in the folder, model id ".").
        os.chdir(model_dir)
        self.model_dir = "."
        t0 = time.perf_counter()
        info: dict[str, Any] = {}
        try:
            engine = self.engine(batch_size)
        except Exception as exc:  # its optimum engine may not import: take its torch engine
            first = f"{type(exc).__name__}: {str(exc)[:400]}"
            info["optimum_engine_error"] = first
            self.engine_name = "torch"
            try:
                engine = self.engine(batch_size)
            except Exception as exc2:
                second = f"{type(exc2).__name__}: {str(exc2)[:400]}"
                raise RuntimeError(f"optimum engine: {first}; torch engine: {second}") from exc2
        info.update(load_s=time.perf_counter() - t0, engine=self.engine_name)
        try:
            model = engine._model_replicas[0]
            info["onnx_file"] = str(getattr(model.model, "model_path", "?"))
            info["max_length"] = int(model.config.max_position_embeddings)
            opts = model.model.model.get_session_options()
            info["ort_intra_op_threads"] = opts.intra_op_num_threads
        except Exception as exc:  # infinity internals differ between releases
            info["introspection_error"] = f"{type(exc).__name__}: {exc}"
        info["ort_providers"] = ort.get_available_providers()
        info["versions"] = {
            n: importlib.metadata.version(n)
            for n in ("infinity-emb", "optimum", "onnxruntime", "transformers", "numpy")
        }
        return info

    def encode(self, start: int, stop: int, batch_size: int, save: str | None) -> dict[str, Any]:
        import numpy as np

        texts = self.texts[start:stop]
        c0, t0 = time.process_time(), time.perf_counter()
        emb = self.embed(texts, batch_size)
        seconds, cpu_s = time.perf_counter() - t0, time.process_time() - c0
        if save:
            rows = np.asarray(emb, dtype=np.float32)
            rows /= np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
            np.save(save, rows)
        return {"seconds": seconds, "cpu_s": cpu_s}

    def latency(self, indices: list[int]) -> dict[str, Any]:
        times = []
        for i in indices:
            t0 = time.perf_counter()
            self.embed([self.texts[i]], 1)
            times.append(time.perf_counter() - t0)
        return {"seconds": times}

    def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        op = req.get("op")
        if op == "load":
            return {"info": self.load(req["model_dir"], int(req.get("batch_size", 32)))}
        if op == "texts":
            self.texts = [str(t) for t in req["texts"]]
            return {"n": len(self.texts)}
        if op == "encode":
            return self.encode(
                int(req["start"]), int(req["stop"]), int(req["batch_size"]), req.get("save")
            )
        if op == "latency":
            return self.latency([int(i) for i in req["indices"]])
        raise ValueError(f"unknown op {op!r}; expected load, texts, encode, latency or quit")

    def close(self) -> None:
        for engine in self.engines.values():
            with contextlib.suppress(Exception):  # shutting down: nothing to report to
                self.loop.run_until_complete(engine.astop())


def main() -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("INFINITY_ANONYMOUS_USAGE_STATS", "0")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    worker = Worker()
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        if req.get("op") == "quit":
            break
        try:
            reply = {"ok": True, **worker.handle(req)}
        except Exception as exc:
            reply = {
                "ok": False,
                "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(limit=8),
            }
        _PROTOCOL.write(json.dumps(reply) + "\n")
        _PROTOCOL.flush()
    worker.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
