"""GPU check: one run on a CUDA machine, one JSON record.

Run through bench/gpu_check.sh on the GPU machine. Stages, each recorded (an error in one
is recorded and the next still runs):

1. ``providers``: ONNX Runtime's version and providers, whether CUDA starts, the card.
2. ``encode``: the model's fp16 variant on CUDA, with and without IO binding: fidelity to
   the reference vectors (``--reference``: PyTorch fp32 of the same texts, computed on the
   CPU machine), offline throughput at the default token budget and at fixed batch sizes
   (runs interleaved, median of three), and a batch-1 ``encode([text])`` loop's latency.
   The server's engine alone on windows of 16, 64 and 256 texts cut at several per-call
   costs (``window_cuts``).
3. ``serve``: ``bertrec serve`` on CUDA (its defaults, and ``--workers`` 1 or as given) and the
   naive server (one ``encode`` per request) under the closed-loop load generator of
   bench/serve_load.py, single-text requests at concurrency 1, 8, 32 and 128 and 64-text
   requests at concurrency 4, interleaved; then served vectors against ``Encoder.encode``.
   With ``--py-spy``, the default server's threads are sampled at c=1 and on 64-text
   requests (raw stacks beside the record; py-spy pauses the process to sample, so those
   two levels of that server are slower than unprofiled).

With no ``--model`` the model is a seeded random bert-base-sized BERT built there (nothing
can be downloaded on that machine) and there is no reference; with the real MiniLM carried
over (``--model``, a model directory with an fp16 variant) every figure is on real text.

    bash bench/gpu_check.sh --model DIR --texts texts.json --reference ref.npy --out OUT
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import percentiles
from bench.serve_load import LEVELS  # the serving bench's load levels

BATCHES = (None, 1, 32, 256)  # None: the Encoder's default token budget


def build_checkpoint(path: Path) -> Path:
    """A seeded random bert-base-sized BERT whose vocabulary covers the packaged sentences."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    from bertrec.runtime.texts import default_sentences

    words = sorted({w for s in default_sentences() for w in re.findall(r"[a-z]+", s.lower())})
    chars = [chr(c) for c in range(97, 123)]
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = list(dict.fromkeys([*special, *chars, *[f"##{c}" for c in chars], *words]))
    path.mkdir(parents=True)
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(path / "vocab.txt")).save_pretrained(str(path))
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(vocab))).save_pretrained(str(path))
    return path


def gpu_name() -> str:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        return out.stdout.strip() or out.stderr.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        return f"nvidia-smi failed: {exc}"


def providers_stage() -> dict[str, Any]:
    import onnxruntime as ort

    from bertrec.runtime.providers import cuda_usable

    return {
        "onnxruntime": ort.__version__,
        "providers": ort.get_available_providers(),
        "cuda_usable": cuda_usable(),
        "gpu": gpu_name(),
        "python": sys.version.split()[0],
        "cpu_count": os.cpu_count(),
    }


def encode_stage(model_dir: Path, texts: list[str], reference: Any, device: str) -> dict[str, Any]:
    from bertrec import Encoder
    from bertrec.runtime.fidelity import fidelity

    out: dict[str, Any] = {"texts": len(texts), "rows": []}
    encoders = {io: Encoder(model_dir, precision="fp16", device=device, io_binding=io)
                for io in (False, True)}  # fmt: skip
    out["encoder"] = encoders[True].describe()
    vectors = {io: enc.encode(texts) for io, enc in encoders.items()}
    out["io_binding_identical"] = bool(np.array_equal(vectors[False], vectors[True]))
    if reference is not None:
        out["fidelity_vs_reference"] = fidelity(vectors[True], reference)
    # Throughput: each (io_binding, batch) three times, interleaved; the median.
    runs: dict[tuple[bool, Any], list[float]] = {}
    for enc in encoders.values():
        for bs in BATCHES:
            n = 256 if bs == 1 else len(texts)
            enc.encode(texts[:n], batch_size=bs)  # warm-up: this batching's shapes
    for _ in range(3):
        for bs in BATCHES:
            for io, enc in encoders.items():
                n = 256 if bs == 1 else len(texts)
                t0 = time.perf_counter()
                enc.encode(texts[:n], batch_size=bs)
                runs.setdefault((io, bs), []).append(n / (time.perf_counter() - t0))
    for (io, bs), r in runs.items():
        out["rows"].append({
            "io_binding": io,
            "batch": "token budget" if bs is None else bs,
            "max_batch_tokens": encoders[io].max_batch_tokens,
            "sentences_per_s": float(np.median(r)),
            "runs": r,
        })  # fmt: skip
    out["window_cuts"] = window_cuts(encoders[True], texts)
    calls = []
    for t in texts[:300]:
        t0 = time.perf_counter()
        encoders[True].encode([t])
        calls.append(time.perf_counter() - t0)
    out["bare_encode_1"] = percentiles(calls)  # as bench/serve_load.py records it
    return out


def window_cuts(enc: Any, texts: list[str]) -> list[dict[str, Any]]:
    """The server's engine alone on windows of 16, 64 and 256 texts, each window cut by
    ``length_groups`` at several per-call costs (shares of the token budget; 0: a call
    is free, every length its own batch), one thread, interleaved, median of three."""
    from bench.serve_engine import run_windows, windows_of

    encodings = enc.tokenize(texts)
    lengths = np.array([len(e) for e in encodings], dtype=np.int64)
    shares = (0.0, 1 / 64, 1 / 10, 1 / 4, 1.0)
    rows = []
    for size in (16, 64, 256):
        windows = windows_of(len(texts), size)
        runs: dict[float, list[float]] = {}
        for rep in range(4):  # the first round warms every shape up
            for share in shares:
                t0 = time.perf_counter()
                run_windows(enc, encodings, lengths, windows, int(enc.max_batch_tokens * share))
                if rep:
                    runs.setdefault(share, []).append(len(texts) / (time.perf_counter() - t0))
        for share, r in runs.items():
            rows.append({"window_texts": size, "call_share": share,
                         "call_tokens": int(enc.max_batch_tokens * share),
                         "sentences_per_s": float(np.median(r))})  # fmt: skip
    return rows


def serve_stage(
    model_dir: Path,
    texts: list[str],
    duration_s: float,
    device: str,
    py_spy: str | None = None,
    out_dir: Path | None = None,
    other_workers: int = 1,
) -> dict[str, Any]:
    from bench.serve_peers import loadgen
    from bertrec import Encoder

    logs = Path(tempfile.mkdtemp(prefix="bertrec-gpu-serve-"))
    py = sys.executable
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    base = ["--precision", "fp16", "--device", device]
    commands = {
        "bertrec": [py, "-m", "bertrec.serve", str(model_dir), *base],
        f"bertrec {other_workers} worker{'s' * (other_workers > 1)}": [
            py,
            "-m",
            "bertrec.serve",
            str(model_dir),
            *base,
            "--workers",
            str(other_workers),
        ],
        "naive": [py, "-m", "bench.serve_peers.naive", str(model_dir), *base],
    }
    servers = {}
    for name, cmd in commands.items():
        port = loadgen.free_port()
        log = logs / (name.replace(" ", "_") + ".log")
        servers[name] = loadgen.Served(
            name, [*cmd, "--port", str(port)], port, "/v1/embeddings", log, env
        )
    out: dict[str, Any] = {"duration_s": duration_s, "systems": {}}
    try:
        for served in servers.values():
            served.wait_ready("/ready", {})
        for level, conc, per in LEVELS:
            bodies = loadgen.request_bodies(texts, per, "minilm")
            for name, served in servers.items():
                spy = None
                if py_spy and out_dir is not None and name == "bertrec" and conc in (1, 4):
                    # Where the default server's time goes (raw stacks, every thread).
                    spy_out = out_dir / f"spy-c{conc}x{per}.txt"
                    spy = subprocess.Popen(
                        [py_spy, "record", "-r", "200", "-f", "raw", "--threads", "-o",
                         str(spy_out), "-d", str(int(duration_s) + 1), "-p", str(served.proc.pid)],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )  # fmt: skip
                r = loadgen.run_level(level, served.url, {}, bodies, per, conc, duration_s,
                                      10**6, 1.0)  # fmt: skip
                if spy is not None:
                    spy.wait(timeout=60)
                row = r.row()
                row["server_rss_mb"] = loadgen.rss_mb(served.proc.pid)
                out["systems"].setdefault(name, []).append(row)
                print(
                    f"{name:18s} {level:14s} {r.sentences_per_s:9.1f} sentences/s "
                    f"p50 {r.latency.get('p50_ms', float('nan')):7.2f} ms "
                    f"p99 {r.latency.get('p99_ms', float('nan')):7.2f} ms errors {r.errors}",
                    flush=True,
                )
        sample = texts[:512]
        got = loadgen.served_vectors(servers["bertrec"].url, {}, sample, "minilm")
        want = Encoder(model_dir, precision="fp16", device=device).encode(sample)
        cos = np.einsum("ij,ij->i", got, want) / (
            np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1)
        )
        out["served_vs_encode"] = {"texts": len(sample), "min_cos": float(cos.min())}
    finally:
        for name, served in servers.items():
            out.setdefault("exit_codes", {})[name] = served.stop()
            out.setdefault("log_tails", {})[name] = served.log_path.read_text(errors="replace")[
                -600:
            ]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=None, help="model directory with fp16")
    p.add_argument("--texts", type=Path, default=None, help='JSON {"texts": [...]}')
    p.add_argument("--reference", type=Path, default=None, help=".npy vectors of the texts")
    p.add_argument("--out", type=Path, default=Path("."), help="folder for the record")
    p.add_argument("--duration-s", type=float, default=5.0, help="seconds per load level")
    p.add_argument("--device", default="cuda", help="cpu: a dry run of the script here")
    p.add_argument("--py-spy", default=None, help="py-spy executable: profile the server")
    p.add_argument("--other-workers", type=int, default=1, help="workers of the 2nd server")
    p.add_argument("--skip", default="", help="comma-separated stages to skip")
    args = p.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    args.out.mkdir(parents=True, exist_ok=True)
    from bertrec.serve import batcher

    record: dict[str, Any] = {
        "kind": "gpu-check",
        "settings": {
            "duration_s": args.duration_s,
            "levels": LEVELS,
            "cuda_call_cost_share": batcher.CUDA_CALL_COST_SHARE,
            "chars_per_token": batcher.CHARS_PER_TOKEN,
        },
        "errors": {},
    }

    def stage(name: str, fn: Any, *a: Any) -> Any:
        if name in skip:
            return None
        t0 = time.perf_counter()
        print(f"== {name}", flush=True)
        try:
            record[name] = fn(*a)
        except Exception:  # a broken stage is recorded; the next one still runs
            record["errors"][name] = traceback.format_exc()[-3000:]
            print(record["errors"][name], flush=True)
        record.setdefault("stage_seconds", {})[name] = round(time.perf_counter() - t0, 1)
        return record.get(name)

    info = stage("providers", providers_stage)
    print(json.dumps(info, indent=1), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        if args.model is None:
            import bertrec

            ckpt = build_checkpoint(Path(tmp) / "ckpt")
            model_dir = bertrec.export_model(ckpt, Path(tmp) / "model", precision=("fp32", "fp16"))
            record["model"] = "seeded random bert-base"
        else:
            model_dir = args.model
            record["model"] = json.loads((model_dir / "manifest.json").read_text()).get("source")
        if args.texts is not None:
            texts = json.loads(args.texts.read_text())["texts"]
        else:
            from bertrec.runtime.texts import default_sentences

            texts = (default_sentences() * 8)[:1024]
        reference = np.load(args.reference) if args.reference is not None else None
        if info and (info.get("cuda_usable") or args.device == "cpu"):
            stage("encode", encode_stage, model_dir, texts, reference, args.device)
            stage("serve", serve_stage, model_dir, texts, args.duration_s, args.device,
                  args.py_spy, args.out, args.other_workers)  # fmt: skip
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = args.out / f"gpu-check-{stamp}.json"
    path.write_text(json.dumps({**record, "written_utc": stamp}, indent=1, default=str) + "\n")
    print(f"record: {path}")
    ran = bool(info and (info.get("cuda_usable") or args.device == "cpu"))
    return 0 if ran and not record["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
