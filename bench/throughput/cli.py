"""Encode throughput and batch-1 latency of bertrec against its peers, on two workloads.

``python -m bench.throughput [--quick] [--model minilm|bert-base|both]
[--workload short|long|both] [--data DIR]`` writes bench/results/throughput-<UTC ts>.json
(machine, versions, threads, settings, the machine's GEMM peaks, every figure per system,
workload and batch setting) and prints one table per model shape and workload.

Method (bench/README.md has the why of each choice):
  * two fixed workloads, the same texts for every system: the short mix
    (bench.common.load_text_mix, ~29 tokens) and long descriptions of 128-512 tokens
    (bench.throughput.workloads, stdlib documentation), truncated at each model's limit;
  * every system gets the same thread budget (torch threads = ORT intra-op threads =
    OpenVINO threads = the usable cores);
  * the machine's GEMM peak per precision is measured first (bench.peak), and every
    figure carries its GFLOP/s (bench.peak's FLOP model) and share of that peak;
  * sweep: each batch setting on the first ``sweep_texts`` texts, after one warm-up per
    system and setting, interleaved across systems (A B C ... A B C ...), in two rounds
    (settings forwards, then backwards; the faster run counts), to find each system's
    best setting;
  * final: each system's best setting and the common batch size on the first
    ``time_texts`` texts, ``repeats`` times interleaved; the median is the figure, and the
    faster of the two is the system's best;
  * latency: one text per call, p50/p90/p99, interleaved in blocks;
  * fidelity: each system's embeddings at the common batch size against
    sentence-transformers PyTorch fp32 (normalized) on all the workload's texts.

The full matrix (every setting, every repeat, all texts) would take several times as long
as a full run; the sizes in ``settings.py`` keep the short workload near 12 minutes and the
long one near 25 on 2 cores.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.common import (
    TextMix,
    add_data_arg,
    log,
    machine_info,
    machine_line,
    minilm_source,
    usable_cores,
    versions,
    write_record,
)
from bench.peak import ModelShape, PeakSettings, measure_peaks, quick_peak_settings
from bench.throughput.settings import (
    REFERENCE,
    Settings,
    ShapeSettings,
    full_settings,
    quick_settings,
    shape_source,
)
from bench.throughput.systems import build_systems
from bench.throughput.timing import Bench, acceptance, token_counts
from bench.throughput.workloads import WORKLOADS, describe_long, load_workload

KIND = "throughput"


def run_shape(
    shape: ShapeSettings, settings: Settings, mix: TextMix, peaks: dict[str, Any]
) -> dict[str, Any]:
    """Build, run and figure every system of ``shape``: the shape's part of the record."""
    t0 = time.perf_counter()
    log(f"[{shape.name}] loading systems ...")
    source = shape_source(shape)
    systems, failed, max_length = build_systems(shape, settings, source)
    texts = mix.texts[: shape.texts]
    tokens = token_counts(texts, source / "tokenizer.json", max_length)
    full = token_counts(texts, source / "tokenizer.json", None)
    model = ModelShape.from_config(source / "config.json")
    load_s = time.perf_counter() - t0
    log(
        f"[{shape.name}] {shape.texts} {shape.workload} texts, mean {tokens.mean():.1f} tokens "
        f"(timed: first {shape.time_texts}, mean {tokens[: shape.time_texts].mean():.1f}); "
        "running ..."
    )
    bench = Bench(shape, settings, mix, tokens, full, model, peaks)
    bench.failed.update(failed)
    t1 = time.perf_counter()
    bench.run(systems)
    run_s = time.perf_counter() - t1
    figures = bench.figures(systems)
    for s in systems:
        s.close()
    return {
        "workload": shape.workload,
        "model": shape.model,
        "settings": asdict(shape),
        "source": str(source),
        "model_shape": asdict(model),
        "max_length": max_length,
        "mean_tokens": float(tokens.mean()),
        "mean_tokens_timed": float(tokens[: shape.time_texts].mean()),
        "mean_tokens_sweep": float(tokens[: shape.sweep_texts].mean()),
        "mean_tokens_untruncated": float(full.mean()),
        "max_tokens": int(tokens.max()),
        "truncated_texts": int((full > max_length).sum()),
        "reference": REFERENCE,
        "systems": figures,
        "acceptance": acceptance(figures),
        "load_s": round(load_s, 1),
        "run_s": round(run_s, 1),
    }


def _pct(share: Any) -> float | None:
    return 100 * share if isinstance(share, (int, float)) else None


def table(shape_name: str, rec: dict[str, Any]) -> str:
    """One shape's figures as a fixed-width table for the terminal."""
    common = f"bs{rec['settings'].get('common_batch') or 32}/s"
    head = (
        f"{'system':38s} {'best':>12s} {'sent/s':>7s} {'tok/s':>7s} {'x ST':>5s} "
        f"{common:>7s} {'x ST':>5s} {'GF/s':>6s} {'peak%':>5s} {'p50ms':>6s} {'p99ms':>6s} "
        f"{'mean cos':>8s} {'p1 cos':>7s} {'min cos':>7s}"
    )
    lines = [
        f"== {shape_name}: timed on {rec['settings']['time_texts']} texts (mean "
        f"{rec['mean_tokens_timed']:.1f} tokens)"
        + (
            f", fidelity on {rec['settings']['texts']} (mean {rec['mean_tokens']:.1f})"
            if rec["settings"]["fidelity"]
            else ""
        )
        + f"; max_length {rec['max_length']} ==",
        head,
        "-" * len(head),
    ]

    def num(x: Any, fmt: str, width: int) -> str:
        return format(x, fmt).rjust(width) if isinstance(x, (int, float)) else "-".rjust(width)

    for name, e in rec["systems"].items():
        if e.get("status") != "ok" and "best" not in e:
            lines.append(f"{name:38s} FAILED ({e.get('stage')}): {e.get('error', '')[:110]}")
            continue
        best, common = e.get("best", {}), e.get("common", {})
        lat, fid = e.get("latency_batch1", {}), e.get("fidelity", {})
        lines.append(
            f"{e['label'][:38]:38s} {best.get('config', '-'):>12s} "
            f"{num(best.get('sentences_per_s'), '.0f', 7)} "
            f"{num(best.get('tokens_per_s'), '.0f', 7)} "
            f"{num(e.get('ratio_best_to_st_fp32'), '.2f', 5)} "
            f"{num(common.get('sentences_per_s'), '.0f', 7)} "
            f"{num(e.get('ratio_common_to_st_fp32'), '.2f', 5)} "
            f"{num(best.get('gflops_per_s'), '.0f', 6)} "
            f"{num(_pct(best.get('share_of_peak')), '.0f', 5)} "
            f"{num(lat.get('p50_ms'), '.1f', 6)} {num(lat.get('p99_ms'), '.1f', 6)} "
            f"{num(fid.get('mean_cos'), '.5f', 8)} {num(fid.get('p1_cos'), '.4f', 7)} "
            f"{num(fid.get('min_cos'), '.4f', 7)}"
        )
    acc = rec.get("acceptance", {})
    if acc.get("auto_x_st_fp32") is not None:
        lines.append(
            f"auto ({acc.get('auto')}): {acc['auto_x_st_fp32']:.2f}x ST fp32, "
            f"{num(acc.get('auto_x_fastest_peer'), '.2f', 0)}x the fastest peer "
            f"({acc.get('fastest_peer')}); share of peak: auto "
            f"{num(_pct(acc.get('auto_share_of_peak')), '.0f', 0)}%"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.throughput", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--quick", action="store_true", help="CI smoke: few texts, MiniLM only")
    p.add_argument("--model", choices=("minilm", "bert-base", "both"), default="both")
    p.add_argument(
        "--workload", choices=(*WORKLOADS, "both"), default="both", help="short mix, long texts"
    )
    p.add_argument("--threads", type=int, default=usable_cores(), help="every system's threads")
    p.add_argument("--no-peer-venv", action="store_true", help="do not build the peer venv")
    p.add_argument("--out", type=Path, default=None, help="results dir (default bench/results)")
    add_data_arg(p)
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    warnings.filterwarnings("ignore")
    import onnxruntime as ort
    import torch

    # Peers' sessions (fastembed's) log every unused initializer of bertrec's int8 graph.
    ort.set_default_logger_severity(3)

    torch.set_num_threads(args.threads)
    with contextlib.suppress(RuntimeError):  # only settable before torch's first op
        torch.set_num_interop_threads(1)
    settings = (
        quick_settings(args.threads, args.workload)
        if args.quick
        else full_settings(args.model, args.threads, not args.no_peer_venv, args.workload)
    )
    start = time.perf_counter()
    machine = machine_info()
    # Both models tokenize with MiniLM's WordPiece (bert-base is built with it).
    tokenizer_json = minilm_source() / "tokenizer.json"
    mixes = {
        w: load_workload(
            w, max(s.texts for s in settings.shapes if s.workload == w), settings.seed,
            args.data, tokenizer_json,
        )
        for w in dict.fromkeys(s.workload for s in settings.shapes)
    }  # fmt: skip
    threads = {
        "torch_intra_op": torch.get_num_threads(),
        "torch_inter_op": torch.get_num_interop_threads(),
        "onnxruntime_intra_op": args.threads,
        "openvino_inference_num_threads": args.threads,
        "cores_usable": usable_cores(),
    }
    log(f"machine: {machine_line(machine)}")
    log(f"threads: {threads}")
    peak_settings = (
        quick_peak_settings(args.threads) if args.quick else PeakSettings(threads=args.threads)
    )
    log("GEMM peaks ...")
    peaks = measure_peaks(peak_settings)
    shapes = {}
    for shape in settings.shapes:
        shapes[shape.name] = run_shape(shape, settings, mixes[shape.workload], peaks)
    load_end = os.getloadavg() if hasattr(os, "getloadavg") else None
    record = {
        "machine": machine,
        "loadavg_at_end": [round(x, 2) for x in load_end] if load_end else None,
        "versions": versions(),
        "threads": threads,
        "settings": asdict(settings),
        "workloads": list(mixes),
        **({"text_mix": mixes["short"].describe()} if "short" in mixes else {}),
        **(
            {"long_text_mix": describe_long(mixes["long"], tokenizer_json)}
            if "long" in mixes
            else {}
        ),
        "peak": peaks,
        "shapes": shapes,
        "elapsed_s": round(time.perf_counter() - start, 1),
        "command": " ".join(["python -m bench.throughput", *(argv or sys.argv[1:])]),
    }
    path = write_record(KIND, record, results_dir=args.out, quick=settings.quick)
    print(f"machine: {machine_line(machine)}")
    print(
        f"threads: {threads['torch_intra_op']} for every system (torch = ORT intra-op = OpenVINO)"
    )
    for name, rec in shapes.items():
        print()
        print(table(name, rec))
    print()
    means = ", ".join(f"{n} {r['mean_tokens']:.1f}" for n, r in shapes.items())
    print(f"mean tokens per text: {means}")
    print(f"elapsed: {record['elapsed_s']:.0f}s; record: {path}")
    return 0
