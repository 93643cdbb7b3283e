"""OpenVINO throughput mode against latency mode, for a call of many batches.

The latency-mode runner compiles with ``PERFORMANCE_HINT=LATENCY`` (one stream using
every thread) and runs batches one after another. This script compiles the same
``model.fp32.onnx`` with ``PERFORMANCE_HINT=THROUGHPUT`` and two streams, feeds the same
padded token-budget batches through an ``AsyncInferQueue`` with two requests, and times
both interleaved on the text mix. It prints sentences/s of each and the share of the
encode time spent tokenizing (the most that overlapping tokenization could save).

    python -m bench.openvino_async [--repeats 6] [--data DIR]

Adopted: ``Encoder.encode`` now runs calls of several batches this way
(``OpenVinoRunner.run_many``), and single batches on the LATENCY-mode model, whose one
request uses every thread (two streams halve the threads per request, which would cost
batch-1 latency). This script keeps the comparison reproducible in isolation.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Iterator

import numpy as np

import bertrec
from bench.common import add_data_arg, bench_model_dir, load_text_mix, machine_info, machine_line
from bertrec.runtime.encoder import DEFAULT_MAX_BATCH_TOKENS
from bertrec.runtime.planning import plan_batches


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.openvino_async", description=__doc__)
    p.add_argument("--repeats", type=int, default=6)
    p.add_argument("--texts", type=int, default=2048)
    add_data_arg(p)
    args = p.parse_args(argv)
    import openvino as ov

    texts = load_text_mix(args.texts, data_dir=args.data).texts
    model_dir = bench_model_dir()
    enc = bertrec.Encoder(model_dir, precision="bf16", backend="openvino", device="cpu")
    budget = DEFAULT_MAX_BATCH_TOKENS["cpu"]
    core = ov.Core()
    compiled = core.compile_model(
        core.read_model(str(model_dir / "model.fp32.onnx")),
        "CPU",
        {
            "INFERENCE_PRECISION_HINT": "bf16",
            "INFERENCE_NUM_THREADS": enc.threads,
            "PERFORMANCE_HINT": "THROUGHPUT",
            "NUM_STREAMS": 2,
        },
    )
    names = {p.any_name for p in compiled.inputs}

    def padded() -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
        """Tokenized, planned and padded as Encoder.encode does it (timed with each run)."""
        encodings = enc._tokenize(texts)
        for rows in plan_batches([len(e.ids) for e in encodings], budget, None):
            batch = enc._pad([encodings[i] for i in rows], rows)
            yield rows, {k: v for k, v in batch.feeds.items() if k in names}

    def run_async() -> np.ndarray:
        out = np.empty((len(texts), enc.dim), np.float32)
        queue = ov.AsyncInferQueue(compiled, 2)

        def done(request: object, rows: np.ndarray) -> None:
            out[rows] = request.get_output_tensor(0).data  # type: ignore[attr-defined]

        queue.set_callback(done)
        for rows, feeds in padded():
            queue.start_async(feeds, rows)
        queue.wait_all()
        return out

    def run_sync() -> np.ndarray:
        out = np.empty((len(texts), enc.dim), np.float32)
        for rows, feeds in padded():
            out[rows] = enc._runner.run(feeds)
        return out

    ref = run_sync()
    got = run_async()
    min_cos = float(np.min(np.sum(got * ref, axis=1)))
    times: dict[str, list[float]] = {"latency mode": [], "throughput, 2 streams": []}
    tok: list[float] = []
    for _ in range(args.repeats):  # interleaved
        t0 = time.perf_counter()
        run_sync()
        times["latency mode"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        run_async()
        times["throughput, 2 streams"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        enc._tokenize(texts)
        tok.append(time.perf_counter() - t0)
    print(machine_line(machine_info()))
    print(f"{len(texts)} texts, budget {budget} tokens, threads {enc.threads}, {args.repeats} runs")
    for name, secs in times.items():
        print(f"  {name:24s} {len(texts) / statistics.median(secs):6.0f} sentences/s")
    share = statistics.median(tok) / statistics.median(times["latency mode"])
    print(f"  min cosine between the two: {min_cos:.6f}; tokenizing is {share:.1%} of encode")


if __name__ == "__main__":
    main()
