"""Every system of a model shape, by id: how each is built, and what a failed build leaves
in the record (the run goes on without it)."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import bench_cache, log
from bench.throughput.base import System, error_text, ort_options
from bench.throughput.bertrec_systems import bertrec_model_dir, bertrec_system, int8_dir
from bench.throughput.infinity_peer import infinity_system
from bench.throughput.openvino_peer import st_openvino_system
from bench.throughput.peers import (
    fastembed_dir,
    fastembed_system,
    optimum_system,
    plain_ort_system,
    st_onnx_dir,
    st_system,
)
from bench.throughput.settings import Settings, ShapeSettings, st_max_length

ST_INT8_FILE = "onnx/model_qint8_avx512_vnni.onnx"


def build_systems(
    shape: ShapeSettings, settings: Settings, source: Path
) -> tuple[list[System], dict[str, dict[str, Any]], int]:
    """Every system of ``shape`` that could be built, why the others could not, and the
    token limit every system truncates to."""
    import torch

    from bertrec.runtime.manifest import read_manifest
    from bertrec.runtime.openvino_runner import cpu_has_bf16

    threads, common = settings.threads, shape.common_batch or settings.common_batch
    failed: dict[str, dict[str, Any]] = {}
    systems: list[System] = []
    cache: dict[str, Any] = {}

    def needs(key: str, make: Callable[[], Any]) -> Any:
        """``make()`` once per run; its error, once raised, is raised again for every
        system that needs it."""
        if key not in cache:
            try:
                cache[key] = make()
            except Exception as exc:
                cache[key] = exc
        if isinstance(cache[key], Exception):
            raise cache[key]
        return cache[key]

    def bertrec_export() -> tuple[Path, str | None]:
        return needs("bertrec", lambda: bertrec_model_dir(source, shape.model))

    def st_onnx() -> Path:
        return needs("st-onnx", lambda: st_onnx_dir(source, shape.model, threads))

    def st_onnx_kwargs(file: str) -> dict[str, Any]:
        return {
            "provider": "CPUExecutionProvider",
            "session_options": ort_options(threads),
            "file_name": file,
        }

    # bertrec's manifest holds the limit its exporter resolved from the source (newer
    # sentence-transformers configs no longer carry max_seq_length where old ones did).
    try:
        max_length = read_manifest(bertrec_export()[0]).max_length
    except Exception:
        max_length = st_max_length(source)
    ov_precision = "bf16" if cpu_has_bf16() else "fp32"

    def fastembed(name: str, graph: str) -> System:
        """fastembed on bertrec's int8 graph (pooled in the graph), or on a Qdrant-style
        export (sentence-transformers' ONNX file, token states; fastembed pools)."""
        if graph == "bertrec":
            onnx_file, pooled, tok_src = int8_dir(bertrec_export()) / "model.int8.onnx", True, None
            info = {"graph": "bertrec model.int8.onnx", "precision": "int8"}
        else:
            onnx_file, pooled, tok_src = st_onnx() / "onnx" / "model.onnx", False, st_onnx()
            info = {"graph": "Qdrant-style export (ST's ONNX file)", "precision": "fp32"}
        dim = read_manifest(bertrec_export()[0]).dim
        folder = fastembed_dir(
            bench_cache(shape.model) / f"fastembed-{graph}",
            tok_src or bertrec_export()[0],
            onnx_file,
            max_length,
        )
        info["max_length"] = max_length
        info["truncation"] = "tokenizer_config.json model_max_length set to every system's limit"
        return fastembed_system(name, folder, dim, pooled, sizes, common, threads, info)

    budgets, sizes = shape.token_budgets, shape.batch_sizes
    on_cpu = {"device": "cpu", "threads": threads}
    builders: dict[str, Callable[[], System]] = {
        "bertrec-ort-fp32": lambda: bertrec_system(
            "bertrec-ort-fp32", bertrec_export()[0], budgets, common,
            precision="fp32", backend="onnxruntime", **on_cpu),
        "bertrec-ort-int8": lambda: bertrec_system(
            "bertrec-ort-int8", int8_dir(bertrec_export()), budgets, common,
            precision="int8", backend="onnxruntime", **on_cpu),
        "bertrec-openvino": lambda: bertrec_system(
            f"bertrec-openvino-{ov_precision}", bertrec_export()[0], budgets, common,
            precision=ov_precision, backend="openvino", **on_cpu),
        "bertrec-auto": lambda: bertrec_system(
            "bertrec-auto", bertrec_export()[0], budgets, common),
        "st-torch-fp32": lambda: st_system("st-torch-fp32", source, sizes, common),
        "st-torch-bf16": lambda: st_system(
            "st-torch-bf16", source, sizes, common,
            model_kwargs={"torch_dtype": torch.bfloat16}, info={"torch_dtype": "bfloat16"}),
        "st-onnx-fp32": lambda: st_system(
            "st-onnx-fp32", st_onnx(), sizes, common, backend="onnx",
            model_kwargs=st_onnx_kwargs("onnx/model.onnx"), info={"file": "onnx/model.onnx"}),
        "st-onnx-int8": lambda: st_system(
            "st-onnx-int8", st_onnx(), sizes, common, backend="onnx",
            model_kwargs=st_onnx_kwargs(ST_INT8_FILE),
            info={"file": ST_INT8_FILE,
                  "quantization": "export_dynamic_quantized_onnx_model(model, 'avx512_vnni')"}),
        "st-openvino": lambda: st_openvino_system(shape, settings, source),
        "optimum-ort-fp32": lambda: optimum_system(
            st_onnx(), max_length, sizes, common, threads),
        "ort-plain-fp32": lambda: plain_ort_system(
            bertrec_export()[0], max_length, sizes, common, threads),
        "fastembed-bertrec-int8": lambda: fastembed("fastembed-bertrec-int8", "bertrec"),
        "fastembed-qdrant-fp32": lambda: fastembed("fastembed-qdrant-fp32", "qdrant"),
        "infinity-optimum-int8": lambda: infinity_system(shape, settings, source),
    }  # fmt: skip
    for key in shape.systems:
        t0 = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                system = builders[key]()
        except Exception as exc:
            failed[key] = {"status": "failed", "stage": "load", "error": error_text(exc)}
            log(f"  {key}: FAILED to load: {error_text(exc)[:300]}")
            continue
        system.info["load_s"] = round(time.perf_counter() - t0, 2)
        systems.append(system)
        log(f"  {system.name}: loaded in {system.info['load_s']:.1f}s")
    refused = cache.get("bertrec")
    if isinstance(refused, tuple) and refused[1]:
        for s in systems:
            if s.name.startswith("bertrec"):
                s.info["int8_export_refused"] = refused[1]
    return systems, failed, max_length
