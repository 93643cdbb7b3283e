"""Token-budget batching vs fixed batch sizes on a realistic length mix, in one run.

Also sweeps the budget to choose ``DEFAULT_MAX_BATCH_TOKENS`` for the CPU.
``python -m bench.token_budget [--quick] [--data DIR]`` writes
bench/results/batching-<ts>.json (the record kind keeps its name from the earlier script).
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import bertrec
from bench.common import (
    add_data_arg,
    bench_model_dir,
    load_text_mix,
    machine_info,
    usable_cores,
    versions,
    write_record,
)

KIND = "batching"


@dataclass(frozen=True)
class Settings:
    texts: int = 2048
    repeats: int = 3
    precision: str = "int8"
    backend: str = "onnxruntime"
    budgets: tuple[int, ...] = (256, 512, 1024, 2048, 4096, 8192)
    fixed_batch_sizes: tuple[int, ...] = (8, 16, 32, 64)
    threads: int = field(default_factory=usable_cores)


def run(settings: Settings, data_dir: Path | None = None) -> dict[str, object]:
    mix = load_text_mix(settings.texts, data_dir=data_dir)
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
    rows = []
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
        "text_mix": mix.describe(),
        "mean_tokens": n_tokens / len(texts),
        "rows": rows,
        "best_budget": best_budget["config"],
        "budget_vs_best_fixed": best_budget["sentences_per_s"] / best_fixed,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.token_budget", description=__doc__)
    p.add_argument("--quick", action="store_true", help="small run for CI smoke")
    p.add_argument("--precision", default="int8")
    add_data_arg(p)
    args = p.parse_args(argv)
    s = Settings(precision=args.precision)
    if args.quick:
        s = Settings(
            texts=128,
            repeats=1,
            precision=args.precision,
            budgets=(512, 2048),
            fixed_batch_sizes=(16,),
        )
    record = run(s, args.data)
    path = write_record(KIND, record, quick=args.quick)
    print(f"{'config':24s} {'sent/s':>8s} {'tok/s':>8s}")
    for r in record["rows"]:  # type: ignore[union-attr]
        print(f"{r['config']:24s} {r['sentences_per_s']:8.0f} {r['tokens_per_s']:8.0f}")
    print(
        f"best budget: {record['best_budget']}; vs best fixed batch: "
        f"{record['budget_vs_best_fixed']:.2f}x  (record: {path})"
    )


if __name__ == "__main__":
    main()
