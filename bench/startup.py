"""How long an Encoder takes to start: from ``Encoder(model_dir)`` to the first vector,
broken down, with bertrec's cache cold, warm and unwritable.

``python -m bench.startup [--quick] [--repeats N] [--threads N]`` writes
bench/results/startup-<UTC ts>.json and prints one line per case and cache state.

Each start runs in a fresh Python process, as a service or a batch job starts, so nothing
is shared between starts; the import of bertrec is timed apart (it is paid once per
process whatever the model). Phases come from ``Encoder.startup`` (manifest read, backend
choice, sha256 check, ONNX Runtime session creation or OpenVINO compile, tokenizer load)
and the first ``encode`` of one text (warm-up: the first run allocates ONNX Runtime's
arena and OpenVINO's buffers); the second call is timed for comparison. Cache states:

  * cold: an empty ``BERTREC_CACHE`` (the first start on a machine: ONNX Runtime optimizes
    the graph and writes it, OpenVINO compiles and writes its blob);
  * warm: the same cache after one untimed start;
  * off: a cache that cannot be created (``BERTREC_CACHE`` under a file): what a read-only
    home gives, and the start without the caches.

The model files stay in the OS page cache throughout (a service restart, not a reboot).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.common import (
    REPO,
    bench_model_dir,
    log,
    machine_info,
    machine_line,
    median,
    usable_cores,
    versions,
    write_record,
)

KIND = "startup"
TARGET_S = 1.0  # MiniLM int8 on the CPU with a warm cache: Encoder() to the first vector
CACHE_STATES = ("cold", "warm", "off")
# One start, in a fresh interpreter: argv[1] is the model dir, argv[2] the Encoder kwargs.
CHILD = """
import json, sys, time
t0 = time.perf_counter()
import bertrec
t1 = time.perf_counter()
enc = bertrec.Encoder(sys.argv[1], **json.loads(sys.argv[2]))
t2 = time.perf_counter()
enc.encode(["a first text to encode"])
t3 = time.perf_counter()
enc.encode(["a second text to encode"])
t4 = time.perf_counter()
print(json.dumps({
    "import_s": t1 - t0, "construct_s": t2 - t1, "first_vector_s": t3 - t2,
    "second_call_s": t4 - t3, "to_first_vector_s": t3 - t1,
    "phases": {k: v for k, v in enc.startup.items() if k.endswith("_s")},
    "cache": enc.startup.get("cache"), "backend": enc.backend, "precision": enc.precision,
}))
"""


@dataclass(frozen=True)
class Case:
    """One way to start an Encoder: a name and its keyword arguments."""

    name: str
    kwargs: dict[str, Any]


CASES = (
    Case("minilm int8 onnxruntime", {"precision": "int8", "backend": "onnxruntime"}),
    Case("minilm fp32 onnxruntime", {"precision": "fp32", "backend": "onnxruntime"}),
    Case("minilm auto", {}),
)


@dataclass(frozen=True)
class StartupSettings:
    repeats: int = 5
    threads: int = field(default_factory=usable_cores)
    cases: tuple[Case, ...] = CASES
    quick: bool = False


def start_once(model_dir: Path, case: Case, cache: str, threads: int) -> dict[str, Any]:
    """One start in a fresh process with ``BERTREC_CACHE=cache``; its timings."""
    env = {**os.environ, "BERTREC_CACHE": cache, "HF_HUB_OFFLINE": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    kwargs = {"device": "cpu", "threads": threads, **case.kwargs}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(model_dir), json.dumps(kwargs)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    if out.returncode != 0:
        raise RuntimeError(f"start failed ({out.returncode}): {out.stderr.strip()[-600:]}")
    data: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return data


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of every timing over the runs of one case and cache state."""
    keys = ("import_s", "construct_s", "first_vector_s", "second_call_s", "to_first_vector_s")
    phases = sorted({k for r in runs for k in r["phases"]})
    return {
        **{k: median([r[k] for r in runs]) for k in keys},
        "phases": {k: median([r["phases"].get(k, 0.0) for r in runs]) for k in phases},
        "cache": sorted({str(r["cache"]) for r in runs}),
        "backend": runs[0]["backend"],
        "precision": runs[0]["precision"],
        "n": len(runs),
        "to_first_vector_all_s": [round(r["to_first_vector_s"], 4) for r in runs],
    }


def run(settings: StartupSettings) -> dict[str, Any]:
    model_dir = bench_model_dir()
    root = Path(tempfile.mkdtemp(prefix="bertrec-startup-"))
    blocker = root / "not-a-dir"
    blocker.write_text("", encoding="utf-8")
    off = str(blocker / "cache")
    warm = {c.name: str(root / f"warm-{i}") for i, c in enumerate(settings.cases)}
    try:
        for c in settings.cases:  # fill each warm cache once, untimed
            start_once(model_dir, c, warm[c.name], settings.threads)
        runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for r in range(settings.repeats):  # interleaved: every case and state once a round
            for c in settings.cases:
                cold = str(root / f"cold-{r}-{c.name.replace(' ', '-')}")
                for state, cache in (("cold", cold), ("warm", warm[c.name]), ("off", off)):
                    runs.setdefault((c.name, state), []).append(
                        start_once(model_dir, c, cache, settings.threads)
                    )
                shutil.rmtree(cold, ignore_errors=True)
            log(f"  round {r + 1}/{settings.repeats} done")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    rows = [
        {"case": c.name, "kwargs": c.kwargs, "cache_state": state, **summarise(runs[c.name, state])}
        for c in settings.cases
        for state in CACHE_STATES
    ]
    target = next(
        (r for r in rows if r["case"] == CASES[0].name and r["cache_state"] == "warm"), None
    )
    return {
        "settings": asdict(settings),
        "model_dir": str(model_dir),
        "rows": rows,
        "target_s": TARGET_S,
        "int8_warm_to_first_vector_s": target["to_first_vector_s"] if target else None,
        "int8_warm_meets_target": bool(target and target["to_first_vector_s"] <= TARGET_S),
    }


def table(rec: dict[str, Any]) -> str:
    head = (
        f"{'case':26s} {'cache':5s} {'import':>7s} {'manifest':>8s} {'choice':>7s} "
        f"{'sha256':>7s} {'session':>8s} {'tokenizer':>9s} {'warm-up':>8s} {'to 1st':>7s}"
    )
    lines = [head, "-" * len(head)]
    for r in rec["rows"]:
        p = r["phases"]
        lines.append(
            f"{r['case'][:26]:26s} {r['cache_state']:5s} {r['import_s']:7.3f} "
            f"{p.get('manifest_s', 0):8.3f} {p.get('backend_choice_s', 0):7.3f} "
            f"{p.get('verify_s', 0):7.3f} {p.get('session_s', 0):8.3f} "
            f"{p.get('tokenizer_s', 0):9.3f} {r['first_vector_s']:8.3f} "
            f"{r['to_first_vector_s']:7.3f}  ({r['backend']} {r['precision']}, "
            f"cache {'/'.join(r['cache'])})"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.startup", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--quick", action="store_true", help="CI smoke: one round")
    p.add_argument("--repeats", type=int, default=None, help="starts per case and cache state")
    p.add_argument("--threads", type=int, default=usable_cores())
    p.add_argument("--out", type=Path, default=None, help="results dir (default bench/results)")
    args = p.parse_args(argv)
    repeats = args.repeats or (1 if args.quick else StartupSettings().repeats)
    settings = StartupSettings(repeats=repeats, threads=args.threads, quick=args.quick)
    machine = machine_info()
    log(f"machine: {machine_line(machine)}")
    t0 = time.perf_counter()
    record = {
        "machine": machine,
        "versions": versions(),
        **run(settings),
        "elapsed_s": 0.0,
    }
    record["elapsed_s"] = round(time.perf_counter() - t0, 1)
    path = write_record(KIND, record, args.out, quick=args.quick)
    print(table(record))
    print(
        f"MiniLM int8 (ONNX Runtime), warm cache: {record['int8_warm_to_first_vector_s']:.3f} s "
        f"from Encoder() to the first vector (target {TARGET_S} s); record: {path}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
