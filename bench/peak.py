"""This machine's GEMM peak for each precision bertrec's backends run, and the FLOP model
that turns an encoder's throughput into a share of it.

``python -m bench.peak [--quick] [--threads N]`` writes bench/results/peak-<UTC ts>.json.
``bench.throughput`` measures the same peaks at the start of its run, so the shares in
its record come from one run on one machine state.

Peaks go through the libraries the systems run on: ONNX Runtime (a one-node ``MatMul``
fp32 and ``MatMulInteger`` u8 x s8 ONNX model, built with ``onnx.helper``: the op and
operand types of bertrec's int8 recipe), OpenVINO (a ``MatMul`` compiled in f32 and, where
the CPU has bf16, bf16) and torch (``torch.matmul`` fp32 and bf16, what
sentence-transformers runs). A precision's peak is the best library's.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bench.common import log, machine_info, machine_line, median, usable_cores, versions
from bench.common import write_record as _write_record

KIND = "peak"

# Token counts per text: a list or an integer array.
Lengths = Sequence[int] | NDArray[np.integer[Any]]


@dataclass(frozen=True)
class PeakSettings:
    """One GEMM shape, (m x k) @ (k x n), timed ``repeats`` times after ``warmup`` calls."""

    m: int = 2048
    k: int = 1024
    n: int = 4096
    warmup: int = 2
    repeats: int = 7
    threads: int = field(default_factory=usable_cores)
    quick: bool = False


def quick_peak_settings(threads: int) -> PeakSettings:
    return PeakSettings(m=512, k=768, n=1536, warmup=1, repeats=3, threads=threads, quick=True)


# -- the FLOP model -------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelShape:
    """What the FLOP count of a BERT encoder depends on (from its config.json)."""

    layers: int
    hidden: int
    intermediate: int

    @classmethod
    def from_config(cls, path: Path) -> ModelShape:
        cfg = json.loads(path.read_text(encoding="utf-8"))
        return cls(
            layers=int(cfg["num_hidden_layers"]),
            hidden=int(cfg["hidden_size"]),
            intermediate=int(cfg["intermediate_size"]),
        )

    def batch_flops(self, rows: int, width: int) -> float:
        """FLOPs of one padded batch as run: per layer, the QKV and output projections and
        the FFN (2 x tokens x hidden x (4 hidden + 2 intermediate)) plus attention scores and
        context (4 x rows x width^2 x hidden). Embeddings, LayerNorm, softmax and pooling
        are left out: they are not GEMMs, and small."""
        tokens = rows * width
        gemm = 2.0 * tokens * self.hidden * (4 * self.hidden + 2 * self.intermediate)
        attention = 4.0 * rows * width * width * self.hidden
        return self.layers * (gemm + attention)

    def useful_flops(self, lengths: Lengths) -> float:
        """FLOPs of the real tokens: each text alone, without padding."""
        return float(sum(self.batch_flops(1, int(t)) for t in lengths))

    def run_flops(self, batches: Sequence[tuple[int, int]]) -> float:
        """FLOPs of ``(rows, width)`` padded batches, as a system ran them."""
        return float(sum(self.batch_flops(r, w) for r, w in batches))


def sorted_batches(lengths: Lengths, batch_size: int) -> list[tuple[int, int]]:
    """(rows, width) of fixed-size batches cut from the texts sorted longest first (what
    sentence-transformers' ``encode`` does, by characters; tokens here)."""
    ordered = sorted((int(t) for t in lengths), reverse=True)
    return [
        (len(ordered[i : i + batch_size]), ordered[i]) for i in range(0, len(ordered), batch_size)
    ]


def input_order_batches(lengths: Lengths, batch_size: int) -> list[tuple[int, int]]:
    """(rows, width) of fixed-size batches in input order (fastembed's ``embed``)."""
    lens = [int(t) for t in lengths]
    return [
        (len(lens[i : i + batch_size]), max(lens[i : i + batch_size]))
        for i in range(0, len(lens), batch_size)
    ]


def budget_batches(
    lengths: Lengths, budget: int, batch_size: int | None = None
) -> list[tuple[int, int]]:
    """(rows, width) of bertrec's token-budget batches (``runtime.planning.plan_batches``)."""
    from bertrec.runtime.planning import plan_batches

    lens = np.asarray(lengths, dtype=np.int64)
    return [(len(b), int(lens[b].max())) for b in plan_batches(lens, budget, batch_size)]


# -- the peaks ------------------------------------------------------------------------------


def _time(fn: Callable[[], Any], s: PeakSettings) -> tuple[float, float]:
    """(best, median) seconds of ``s.repeats`` calls after ``s.warmup`` calls."""
    for _ in range(s.warmup):
        fn()
    times = []
    for _ in range(s.repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), median(times)


def _ort_gemm(s: PeakSettings, precision: str) -> Callable[[], Any]:
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    a: NDArray[Any]
    b: NDArray[Any]
    if precision == "fp32":
        a = rng.standard_normal((s.m, s.k), dtype=np.float32)
        b = rng.standard_normal((s.k, s.n), dtype=np.float32)
        node = helper.make_node("MatMul", ["a", "b"], ["y"])
        inits = [numpy_helper.from_array(b, "b")]
        a_type, y_type = TensorProto.FLOAT, TensorProto.FLOAT
    else:  # bertrec's int8 recipe: u8 activations (zero point 128) x s8 weights -> int32
        a = rng.integers(0, 256, (s.m, s.k), dtype=np.uint8)
        b = rng.integers(-127, 128, (s.k, s.n), dtype=np.int8)
        node = helper.make_node("MatMulInteger", ["a", "b", "azp", "bzp"], ["y"])
        inits = [
            numpy_helper.from_array(b, "b"),
            numpy_helper.from_array(np.array(128, np.uint8), "azp"),
            numpy_helper.from_array(np.array(0, np.int8), "bzp"),
        ]
        a_type, y_type = TensorProto.UINT8, TensorProto.INT32
    graph = helper.make_graph(
        [node],
        "gemm",
        [helper.make_tensor_value_info("a", a_type, [s.m, s.k])],
        [helper.make_tensor_value_info("y", y_type, [s.m, s.n])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    so = ort.SessionOptions()
    so.intra_op_num_threads = s.threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    onnx.checker.check_model(model)
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return lambda: sess.run(None, {"a": a})


def _openvino_gemm(s: PeakSettings, precision: str) -> Callable[[], Any]:
    import openvino as ov
    import openvino.opset13 as ops

    rng = np.random.default_rng(0)
    a = rng.standard_normal((s.m, s.k), dtype=np.float32)
    b = rng.standard_normal((s.k, s.n), dtype=np.float32)
    param = ops.parameter([s.m, s.k], ov.Type.f32, name="a")
    model = ov.Model([ops.matmul(param, ops.constant(b), False, False)], [param], "gemm")
    config = {
        "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
        "INFERENCE_NUM_THREADS": s.threads,
        "PERFORMANCE_HINT": "LATENCY",
    }
    compiled = ov.Core().compile_model(model, "CPU", config)
    request = compiled.create_infer_request()
    return lambda: request.infer({0: a}, share_inputs=True)


def _torch_gemm(s: PeakSettings, precision: str) -> Callable[[], Any]:
    import torch

    torch.set_num_threads(s.threads)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(s.m, s.k, generator=gen).to(dtype)
    b = torch.randn(s.k, s.n, generator=gen).to(dtype)

    def run() -> Any:
        with torch.inference_mode():
            return torch.matmul(a, b)

    return run


# (library, precision, op) -> builder; bf16 entries run only where the CPU has bf16.
GEMMS: dict[tuple[str, str, str], Callable[[PeakSettings, str], Callable[[], Any]]] = {
    ("onnxruntime", "fp32", "MatMul"): _ort_gemm,
    ("onnxruntime", "int8", "MatMulInteger u8 x s8"): _ort_gemm,
    ("openvino", "fp32", "MatMul f32"): _openvino_gemm,
    ("openvino", "bf16", "MatMul bf16"): _openvino_gemm,
    ("torch", "fp32", "matmul"): _torch_gemm,
    ("torch", "bf16", "matmul bf16"): _torch_gemm,
}


def measure_peaks(s: PeakSettings) -> dict[str, Any]:
    """Every library's GEMM rate on this machine and the best per precision, in GFLOP/s."""
    from bertrec.runtime.openvino_runner import cpu_has_bf16, openvino_importable

    flops = 2.0 * s.m * s.n * s.k
    rows: list[dict[str, Any]] = []
    for (library, precision, op), build in GEMMS.items():
        row: dict[str, Any] = {"library": library, "precision": precision, "op": op}
        if library == "openvino" and not openvino_importable():
            row["error"] = "OpenVINO is not installed"
        elif precision == "bf16" and not cpu_has_bf16():
            row["error"] = "no native bf16 on this CPU (or oneDNN's ISA cap)"
        else:
            try:
                best, med = _time(build(s, precision), s)
                row.update(
                    best_s=best, median_s=med, gflops=flops / best / 1e9,
                    gflops_median=flops / med / 1e9,
                )  # fmt: skip
            except Exception as exc:  # a library that cannot run the op: say so, go on
                row["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        rows.append(row)
        if "gflops" in row:
            log(f"  peak {library:12s} {precision:5s} {row['gflops']:8.1f} GFLOP/s")
    by_precision: dict[str, dict[str, Any]] = {}
    for row in rows:
        if "gflops" in row and row["gflops"] > by_precision.get(row["precision"], {}).get(
            "gflops", 0.0
        ):
            by_precision[row["precision"]] = {"gflops": row["gflops"], "library": row["library"]}
    return {
        "settings": asdict(s),
        "gemm_flops": flops,
        "rows": rows,
        "by_precision": by_precision,
    }


def share_of_peak(gflops: float, precision: str, peaks: dict[str, Any]) -> float | None:
    """``gflops`` as a share of the machine's peak for ``precision`` (None: not measured)."""
    peak = peaks.get("by_precision", {}).get(precision, {}).get("gflops")
    return gflops / peak if peak else None


def table(rec: dict[str, Any]) -> str:
    lines = [f"{'library':12s} {'precision':9s} {'op':24s} {'GFLOP/s':>9s} {'median':>9s}"]
    for r in rec["rows"]:
        if "gflops" in r:
            lines.append(
                f"{r['library']:12s} {r['precision']:9s} {r['op']:24s} {r['gflops']:9.1f} "
                f"{r['gflops_median']:9.1f}"
            )
        else:
            lines.append(f"{r['library']:12s} {r['precision']:9s} {r['op']:24s} {r['error']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.peak", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="CI smoke: a small GEMM, 3 repeats")
    p.add_argument("--threads", type=int, default=usable_cores(), help="threads per library")
    p.add_argument("--out", type=Path, default=None, help="results dir (default bench/results)")
    args = p.parse_args(argv)
    s = quick_peak_settings(args.threads) if args.quick else PeakSettings(threads=args.threads)
    machine = machine_info()
    log(f"machine: {machine_line(machine)}")
    log(f"GEMM ({s.m} x {s.k}) @ ({s.k} x {s.n}), {s.threads} threads ...")
    peaks = measure_peaks(s)
    record = {"machine": machine, "versions": versions(), **peaks}
    path = _write_record(KIND, record, args.out, quick=args.quick)
    print(table(record))
    best = ", ".join(
        f"{k} {v['gflops']:.0f} ({v['library']})" for k, v in peaks["by_precision"].items()
    )
    print(f"peak GFLOP/s by precision: {best}; record: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
