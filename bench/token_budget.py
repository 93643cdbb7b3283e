"""Token-budget batching vs fixed batch sizes on a realistic length mix, in one run.

Also sweeps the budget to choose ``DEFAULT_MAX_BATCH_TOKENS`` for the CPU.
``python -m bench.token_budget [--quick] [--workload short|long] [--backend B]
[--precision P] [--data DIR]`` writes bench/results/batching-<ts>.json for the short mix
(the record kind keeps its name from the earlier script) and batching-long-<ts>.json for
the long texts (128-512 tokens, bench.throughput.workloads).
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import bertrec
from bench.common import (
    add_data_arg,
    bench_model_dir,
    machine_info,
    minilm_source,
    usable_cores,
    versions,
    write_record,
)
from bench.throughput.workloads import describe_long, load_workload

KIND = "batching"
KINDS = {"short": KIND, "long": "batching-long"}


@dataclass(frozen=True)
class Settings:
    texts: int = 2048
    repeats: int = 3
    precision: str = "int8"
    backend: str = "onnxruntime"
    budgets: tuple[int, ...] = (256, 512, 1024, 2048, 4096, 8192)
    fixed_batch_sizes: tuple[int, ...] = (8, 16, 32, 64)
    threads: int = field(default_factory=usable_cores)
    workload: str = "short"


# Long texts (~230 tokens after MiniLM's truncation at 256): budgets from one row up (with
# ONNX Runtime's batches side by side, one-row batches are candidates too).
LONG = Settings(
    texts=256,
    budgets=(256, 512, 1024, 2048, 4096, 8192),
    fixed_batch_sizes=(4, 8, 16, 32),
    workload="long",
)


def run(settings: Settings, data_dir: Path | None = None) -> dict[str, Any]:
    tokenizer_json = minilm_source() / "tokenizer.json"
    mix = load_workload(settings.workload, settings.texts, 0, data_dir, tokenizer_json)
    texts = mix.texts
    model_dir = bench_model_dir()
    configs: dict[str, bertrec.Encoder] = {}
    calls: dict[str, dict[str, int | None]] = {}
    for b in settings.budgets:
        name = f"token budget {b}"
        configs[name] = bertrec.Encoder(
            model_dir,
            precision=settings.precision,
            device="cpu",
            backend=settings.backend,
            max_batch_tokens=b,
            threads=settings.threads,
        )
        calls[name] = {"batch_size": None}
    for bs in settings.fixed_batch_sizes:
        # A budget no batch reaches: rows per batch are fixed, as in a plain batch loop.
        name = f"fixed batch {bs}"
        configs[name] = bertrec.Encoder(
            model_dir,
            precision=settings.precision,
            device="cpu",
            backend=settings.backend,
            max_batch_tokens=10**9,
            threads=settings.threads,
        )
        calls[name] = {"batch_size": bs}
    times: dict[str, list[float]] = {k: [] for k in configs}
    for name, enc in configs.items():  # warm-up
        enc.encode(texts[:64], **calls[name])
    for _ in range(settings.repeats):  # interleaved: every configuration once per round
        for name, enc in configs.items():
            t0 = time.perf_counter()
            enc.encode(texts, **calls[name])
            times[name].append(time.perf_counter() - t0)
    tok = next(iter(configs.values()))._tokenizer
    n_tokens = sum(len(e.ids) for e in tok.encode_batch(texts))
    rows: list[dict[str, Any]] = []
    for name, ts in times.items():
        med = statistics.median(ts)
        rows.append(
            {
                "config": name,
                **calls[name],
                "seconds_median": med,
                "sentences_per_s": len(texts) / med,
                "tokens_per_s": n_tokens / med,
            }
        )
    best_fixed = max(r["sentences_per_s"] for r in rows if r["config"].startswith("fixed"))
    best_budget = max(rows, key=lambda r: r["sentences_per_s"] if "budget" in r["config"] else 0)
    return {
        "settings": asdict(settings),
        "machine": machine_info(),
        "versions": versions(),
        "text_mix": (
            describe_long(mix, tokenizer_json) if settings.workload == "long" else mix.describe()
        ),
        "mean_tokens": n_tokens / len(texts),
        "rows": rows,
        "best_budget": best_budget["config"],
        "budget_vs_best_fixed": best_budget["sentences_per_s"] / best_fixed,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.token_budget", description=__doc__)
    p.add_argument("--quick", action="store_true", help="small run for CI smoke")
    p.add_argument("--workload", choices=("short", "long"), default="short")
    p.add_argument("--precision", default="int8")
    p.add_argument("--backend", choices=("onnxruntime", "openvino"), default="onnxruntime")
    add_data_arg(p)
    args = p.parse_args(argv)
    base = LONG if args.workload == "long" else Settings()
    s = replace(base, precision=args.precision, backend=args.backend)
    if args.quick:
        quick = {"texts": 24, "budgets": (1024, 4096), "fixed_batch_sizes": (8,)}
        if args.workload == "short":
            quick = {"texts": 128, "budgets": (512, 2048), "fixed_batch_sizes": (16,)}
        s = replace(s, repeats=1, **quick)  # type: ignore[arg-type]
    record = run(s, args.data)
    path = write_record(KINDS[args.workload], record, quick=args.quick)
    print(f"{'config':24s} {'sent/s':>8s} {'tok/s':>8s}")
    for r in record["rows"]:
        print(f"{r['config']:24s} {r['sentences_per_s']:8.0f} {r['tokens_per_s']:8.0f}")
    print(
        f"{args.workload} texts, {s.backend} {s.precision}: mean "
        f"{record['mean_tokens']:.1f} tokens; best budget: {record['best_budget']}; vs best "
        f"fixed batch: {record['budget_vs_best_fixed']:.2f}x  (record: {path})"
    )


if __name__ == "__main__":
    main()
