"""Does ONNX Runtime's transformer optimizer (fused attention, SkipLayerNorm, BiasGelu) make
bertrec's graphs faster on the CPU, and does the per-token int8 recipe still apply after it?

``python -m bench.attention_fusion [--quick] [--data DIR]`` writes
bench/results/fusion-<UTC ts>.json. On MiniLM (bench export) it builds, in a temp dir:

  * ``fp32-fused``: ``optimize_model(model_type="bert")`` on model.fp32.onnx (packed-QKV
    ``Attention``);
  * ``fp32-fused-mha``: the same with ``use_multi_head_attention`` (``MultiHeadAttention``,
    Q/K/V projections left as MatMuls);
  * ``int8-fused-mha``: bertrec's per-token int8 recipe (``quantize.quantizer``) applied to
    ``fp32-fused-mha`` (it needs weight MatMuls; the packed-QKV graph has none for Q/K/V);

and times them against the exported fp32 and int8 files, every session with ONNX Runtime's
own optimizations on, on the short mix (batch 32) and the long texts (batch 8), sorted by
length, interleaved, median of the rounds; cosine against the exported fp32 file.
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import (
    add_data_arg,
    bench_model_dir,
    log,
    machine_info,
    machine_line,
    median,
    minilm_source,
    usable_cores,
    versions,
    write_record,
)

KIND = "fusion"


@dataclass(frozen=True)
class FusionSettings:
    short_texts: int = 512
    long_texts: int = 128
    short_batch: int = 32
    long_batch: int = 8
    rounds: int = 3
    threads: int = field(default_factory=usable_cores)
    quick: bool = False


def build_variants(model_dir: Path, out: Path, heads: int, hidden: int) -> dict[str, Path]:
    """The exported files and the fused ones, built into ``out``."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    from bertrec.quantize.quantizer import _quantize_int8

    files = {"fp32": model_dir / "model.fp32.onnx", "int8": model_dir / "model.int8.onnx"}
    for name, mha in (("fp32-fused", False), ("fp32-fused-mha", True)):
        options = FusionOptions("bert")
        options.use_multi_head_attention = mha
        fused = optimize_model(
            str(files["fp32"]), model_type="bert", num_heads=heads, hidden_size=hidden,
            optimization_options=options, opt_level=0, use_gpu=False,
        )  # fmt: skip
        files[name] = out / f"{name}.onnx"
        fused.save_model_to_file(str(files[name]))
    files["int8-fused-mha"] = out / "int8-fused-mha.onnx"
    _quantize_int8(files["fp32-fused-mha"], files["int8-fused-mha"], keep_fp32=())
    return files


def ops(path: Path) -> dict[str, int]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return dict(collections.Counter(n.op_type for n in graph.node).most_common(8))


def batches(texts: list[str], tokenizer_json: Path, max_length: int, size: int) -> list[Any]:
    """Padded feeds of ``texts`` sorted by token length, ``size`` rows each."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    tok.no_padding()
    tok.enable_truncation(max_length=max_length)
    enc = sorted(tok.encode_batch(texts), key=lambda e: -len(e.ids))
    out = []
    for i in range(0, len(enc), size):
        part = enc[i : i + size]
        width = max(len(e.ids) for e in part)
        ids = np.zeros((len(part), width), np.int64)
        mask = np.zeros_like(ids)
        for r, e in enumerate(part):
            ids[r, : len(e.ids)], mask[r, : len(e.ids)] = e.ids, 1
        out.append({"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})
    return out


def run(s: FusionSettings, data_dir: Path | None) -> dict[str, Any]:
    import onnxruntime as ort

    from bench.peak import ModelShape
    from bench.throughput.workloads import load_workload
    from bertrec.runtime.manifest import read_manifest

    model_dir = bench_model_dir()
    manifest = read_manifest(model_dir)
    src = minilm_source()
    shape = ModelShape.from_config(src / "config.json")
    tmp = Path(tempfile.mkdtemp(prefix="bertrec-fusion-"))
    log("building the fused graphs ...")
    heads = int(
        json.loads((src / "config.json").read_text(encoding="utf-8"))["num_attention_heads"]
    )
    files = build_variants(model_dir, tmp, heads=heads, hidden=shape.hidden)
    tok = src / "tokenizer.json"
    work = {
        "short": batches(
            load_workload("short", s.short_texts, 0, data_dir, tok).texts, tok,
            manifest.max_length, s.short_batch,
        ),
        "long": batches(
            load_workload("long", s.long_texts, 0, data_dir, tok).texts, tok,
            manifest.max_length, s.long_batch,
        ),
    }  # fmt: skip
    sessions = {}
    for name, path in files.items():
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads, so.log_severity_level = s.threads, 1, 3
        sessions[name] = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])

    def encode(name: str, feeds: list[Any]) -> np.ndarray:
        sess = sessions[name]
        names = {i.name for i in sess.get_inputs()}
        out = [sess.run(["sentence_embedding"], {k: v for k, v in f.items() if k in names})[0]
               for f in feeds]  # fmt: skip
        return np.concatenate(out)

    times: dict[tuple[str, str], list[float]] = {}
    vectors: dict[tuple[str, str], np.ndarray] = {}
    for w, feeds in work.items():
        for name in files:  # warm-up, and the vectors for the cosine
            vectors[name, w] = encode(name, feeds)
        for _ in range(s.rounds):
            for name in files:
                t0 = time.perf_counter()
                encode(name, feeds)
                times.setdefault((name, w), []).append(time.perf_counter() - t0)
    rows = []
    for name, path in files.items():
        row: dict[str, Any] = {
            "variant": name,
            "ops": ops(path),
            "size_mb": path.stat().st_size / 1e6,
        }
        for w in work:
            ref, got = vectors["fp32", w], vectors[name, w]
            cos = (ref * got).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(got, axis=1)
            n = sum(len(f["input_ids"]) for f in work[w])
            row[w] = {
                "median_s": median(times[name, w]),
                "sentences_per_s": n / median(times[name, w]),
                "x_fp32": median(times["fp32", w]) / median(times[name, w]),
                "x_int8": median(times["int8", w]) / median(times[name, w]),
                "mean_cos_vs_fp32": float(cos.mean()),
                "min_cos_vs_fp32": float(cos.min()),
            }
        rows.append(row)
    return {"settings": asdict(s), "model_dir": str(model_dir), "rows": rows}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.attention_fusion", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--quick", action="store_true", help="CI smoke: few texts, one round")
    p.add_argument("--threads", type=int, default=usable_cores())
    add_data_arg(p)
    args = p.parse_args(argv)
    s = FusionSettings(threads=args.threads)
    if args.quick:
        s = FusionSettings(
            short_texts=64, long_texts=16, rounds=1, threads=args.threads, quick=True
        )
    machine = machine_info()
    log(f"machine: {machine_line(machine)}")
    record = {"machine": machine, "versions": versions(), **run(s, args.data)}
    path = write_record(KIND, record, quick=s.quick)
    print(
        f"{'variant':16s} {'short/s':>8s} {'x fp32':>7s} {'x int8':>7s} {'long/s':>7s} "
        f"{'x fp32':>7s} {'x int8':>7s} {'min cos short':>13s} {'min cos long':>12s}"
    )
    for r in record["rows"]:
        sh, lo = r["short"], r["long"]
        print(
            f"{r['variant']:16s} {sh['sentences_per_s']:8.0f} {sh['x_fp32']:7.2f} "
            f"{sh['x_int8']:7.2f} {lo['sentences_per_s']:7.1f} {lo['x_fp32']:7.2f} "
            f"{lo['x_int8']:7.2f} {sh['min_cos_vs_fp32']:13.5f} {lo['min_cos_vs_fp32']:12.5f}"
        )
    print(f"record: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
