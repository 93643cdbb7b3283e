"""Encode throughput and batch-1 latency of bertrec against its peers, on one text mix.

``python -m bench.throughput [--quick] [--model minilm|bert-base|both] [--data DIR]``
writes bench/results/throughput-<UTC ts>.json (machine, versions, threads, settings, every
figure per system and batch setting) and prints one table per model shape.

Method (bench/README.md has the why of each choice):
  * one fixed text mix (bench.common.load_text_mix), the same texts for every system;
  * every system gets the same thread budget (torch threads = ORT intra-op threads =
    OpenVINO threads = the usable cores);
  * sweep: each batch setting on the first ``sweep_texts`` texts, after one warm-up per
    system and setting, interleaved across systems (A B C ... A B C ...), in two rounds
    (settings forwards, then backwards; the faster run counts), to find each system's
    best setting;
  * final: each system's best setting and the common batch size 32 on the first
    ``time_texts`` texts, ``repeats`` times interleaved; the median is the figure, and the
    faster of the two is the system's best;
  * latency: one text per call, p50/p90/p99, interleaved in blocks;
  * fidelity: each system's embeddings at batch 32 against sentence-transformers
    PyTorch fp32 (normalized) on the whole mix.

The full matrix (every setting, every repeat, all texts, 11 MiniLM systems) would take
several times as long as a full run; the sizes in ``settings.py`` keep one near 10 minutes
on 2 cores.
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
    load_text_mix,
    log,
    machine_info,
    machine_line,
    usable_cores,
    versions,
    write_record,
)
from bench.throughput.settings import (
    REFERENCE,
    Settings,
    ShapeSettings,
    full_settings,
    quick_settings,
    shape_source,
)
from bench.throughput.systems import build_systems
from bench.throughput.timing import Bench, token_counts

KIND = "throughput"


def run_shape(shape: ShapeSettings, settings: Settings, mix: TextMix) -> dict[str, Any]:
    """Build, run and figure every system of ``shape``: the shape's part of the record."""
    t0 = time.perf_counter()
    log(f"[{shape.name}] loading systems ...")
    source = shape_source(shape)
    systems, failed, max_length = build_systems(shape, settings, source)
    tokens = token_counts(mix.texts[: shape.texts], source / "tokenizer.json", max_length)
    load_s = time.perf_counter() - t0
    log(
        f"[{shape.name}] {shape.texts} texts, mean {tokens.mean():.1f} tokens "
        f"(timed: first {shape.time_texts}, mean {tokens[: shape.time_texts].mean():.1f}); "
        "running ..."
    )
    bench = Bench(shape, settings, mix, tokens)
    bench.failed.update(failed)
    t1 = time.perf_counter()
    bench.run(systems)
    run_s = time.perf_counter() - t1
    figures = bench.figures(systems)
    for s in systems:
        s.close()
    return {
        "settings": asdict(shape),
        "source": str(source),
        "max_length": max_length,
        "mean_tokens": float(tokens.mean()),
        "mean_tokens_timed": float(tokens[: shape.time_texts].mean()),
        "mean_tokens_sweep": float(tokens[: shape.sweep_texts].mean()),
        "max_tokens": int(tokens.max()),
        "reference": REFERENCE,
        "systems": figures,
        "load_s": round(load_s, 1),
        "run_s": round(run_s, 1),
    }


def table(shape_name: str, rec: dict[str, Any]) -> str:
    """One shape's figures as a fixed-width table for the terminal."""
    head = (
        f"{'system':38s} {'best':>12s} {'sent/s':>7s} {'tok/s':>7s} {'x ST':>5s} "
        f"{'bs32/s':>7s} {'x ST':>5s} {'p50ms':>6s} {'p99ms':>6s} "
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
            f"{num(lat.get('p50_ms'), '.1f', 6)} {num(lat.get('p99_ms'), '.1f', 6)} "
            f"{num(fid.get('mean_cos'), '.5f', 8)} {num(fid.get('p1_cos'), '.4f', 7)} "
            f"{num(fid.get('min_cos'), '.4f', 7)}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.throughput", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--quick", action="store_true", help="CI smoke: few texts, MiniLM only")
    p.add_argument("--model", choices=("minilm", "bert-base", "both"), default="both")
    p.add_argument("--threads", type=int, default=usable_cores(), help="every system's threads")
    p.add_argument("--no-peer-venv", action="store_true", help="do not build the peer venv")
    p.add_argument("--out", type=Path, default=None, help="results dir (default bench/results)")
    add_data_arg(p)
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    warnings.filterwarnings("ignore")
    import torch

    torch.set_num_threads(args.threads)
    with contextlib.suppress(RuntimeError):  # only settable before torch's first op
        torch.set_num_interop_threads(1)
    settings = (
        quick_settings(args.threads)
        if args.quick
        else full_settings(args.model, args.threads, not args.no_peer_venv)
    )
    start = time.perf_counter()
    machine = machine_info()
    mix = load_text_mix(max(s.texts for s in settings.shapes), settings.seed, args.data)
    threads = {
        "torch_intra_op": torch.get_num_threads(),
        "torch_inter_op": torch.get_num_interop_threads(),
        "onnxruntime_intra_op": args.threads,
        "openvino_inference_num_threads": args.threads,
        "cores_usable": usable_cores(),
    }
    log(f"machine: {machine_line(machine)}")
    log(f"threads: {threads}")
    shapes = {}
    for shape in settings.shapes:
        shapes[shape.name] = run_shape(shape, settings, mix)
    load_end = os.getloadavg() if hasattr(os, "getloadavg") else None
    record = {
        "machine": machine,
        "loadavg_at_end": [round(x, 2) for x in load_end] if load_end else None,
        "versions": versions(),
        "threads": threads,
        "settings": asdict(settings),
        "text_mix": mix.describe(),
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
