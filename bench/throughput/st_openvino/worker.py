"""Worker for sentence-transformers ``backend="openvino"``, run inside its own venv.

It lives apart because optimum-intel needs optimum 2.3 while bertrec's exporter pins 2.1.
bench/throughput/openvino_peer.py starts it and talks JSON lines over stdin/stdout, one
request and one reply at a time, so its runs interleave with the in-process systems. Times
are taken in here around ``encode`` alone, as the in-process systems are, so the pipe costs
nothing. Only the standard library, numpy and the venv's own packages are imported: this file
must not import bertrec or bench.

Requests (``op`` and its fields) and replies (``ok`` plus fields, or ``ok: false`` with
``error``):
    load      model_dir, export_dir, threads  -> info
    texts     texts                           -> n
    encode    start, stop, batch_size, save?  -> seconds, cpu_s (save: .npy path)
    latency   indices                         -> seconds (one per text, batch 1)
    quit
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import traceback
from pathlib import Path
from typing import Any

# Libraries print to stdout (progress, warnings); the protocol owns the real stdout.
_PROTOCOL = sys.stdout
sys.stdout = sys.stderr

OV_FILE = Path("openvino") / "openvino_model.xml"


class Worker:
    def __init__(self) -> None:
        self.model: Any = None
        self.texts: list[str] = []

    def load(self, model_dir: str, export_dir: str, threads: int) -> dict[str, Any]:
        import importlib.metadata

        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(threads)
        out = Path(export_dir)
        t0 = time.perf_counter()
        exported = False
        if not (out / OV_FILE).is_file():
            # Export once from a copy (the source may be read-only), then keep it.
            if out.exists():
                shutil.rmtree(out)
            shutil.copytree(model_dir, out)
            model = SentenceTransformer(str(out), backend="openvino", device="cpu")
            model.save_pretrained(str(out))
            del model
            exported = True
        self.model = SentenceTransformer(
            str(out),
            backend="openvino",
            device="cpu",
            model_kwargs={"ov_config": {"INFERENCE_NUM_THREADS": threads}},
        )
        load_s = time.perf_counter() - t0
        info: dict[str, Any] = {"load_s": load_s, "exported_now": exported}
        try:
            request = self.model[0].auto_model.request
            compiled = getattr(request, "get_compiled_model", lambda: request)()
            for key in ("INFERENCE_PRECISION_HINT", "INFERENCE_NUM_THREADS", "PERFORMANCE_HINT"):
                info[key] = str(compiled.get_property(key))
        except Exception as exc:  # optimum-intel internals differ between releases
            info["compiled_properties_error"] = f"{type(exc).__name__}: {exc}"
        info["versions"] = {
            name: importlib.metadata.version(name)
            for name in (
                "sentence-transformers",
                "optimum",
                "optimum-intel",
                "openvino",
                "torch",
                "transformers",
            )
        }
        return info

    def encode(self, start: int, stop: int, batch_size: int, save: str | None) -> dict[str, Any]:
        import numpy as np

        texts = self.texts[start:stop]
        c0, t0 = time.process_time(), time.perf_counter()
        emb = self.model.encode(texts, batch_size=batch_size, normalize_embeddings=True)
        seconds, cpu_s = time.perf_counter() - t0, time.process_time() - c0
        if save:
            np.save(save, np.asarray(emb, dtype=np.float32))
        return {"seconds": seconds, "cpu_s": cpu_s}

    def latency(self, indices: list[int]) -> dict[str, Any]:
        times = []
        for i in indices:
            t0 = time.perf_counter()
            self.model.encode([self.texts[i]], batch_size=1, normalize_embeddings=True)
            times.append(time.perf_counter() - t0)
        return {"seconds": times}

    def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        op = req.get("op")
        if op == "load":
            return {"info": self.load(req["model_dir"], req["export_dir"], int(req["threads"]))}
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


def main() -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
