"""The infinity-emb peer: its engine in a worker process in infinity's own venv (it pins
numpy<2 and optimum 1.x, which clash with bertrec's exporter), built and shared with the
serving benchmark (bench/serve_peers/infinity.py)."""

from __future__ import annotations

from pathlib import Path

from bench.common import bench_cache
from bench.throughput.base import Config, System, SystemFailed
from bench.throughput.openvino_peer import PeerSystem
from bench.throughput.settings import Settings, ShapeSettings

WORKER = Path(__file__).resolve().parent / "infinity_worker.py"


def infinity_system(shape: ShapeSettings, settings: Settings, source: Path) -> System:
    """infinity's ``AsyncEmbeddingEngine`` (optimum engine, CPU), which prefers the int8
    ONNX file on the CPU: sentence-transformers' avx512_vnni export, as the serving peer;
    its torch engine where the optimum one does not load (the record says why)."""
    try:
        from bench.serve_peers.infinity import infinity_model_dir, infinity_venv
    except ImportError as exc:
        raise SystemFailed(f"the infinity venv builder is not available: {exc}") from exc
    if shape.model != "minilm":
        raise SystemFailed("infinity runs on MiniLM only here (its model folder is MiniLM's)")
    command, how = infinity_venv(settings.build_peer_venv)
    if command is None:
        raise SystemFailed(how)
    common = shape.common_batch or settings.common_batch
    system = PeerSystem(
        "infinity-optimum-int8",
        "infinity-emb optimum int8 (own venv)",
        command.parent / "python",
        WORKER,
        {"model_dir": str(infinity_model_dir(source, settings.threads)), "batch_size": common},
        [Config(batch_size=b) for b in shape.batch_sizes],
        Config(batch_size=common),
        log_path=bench_cache() / "infinity-worker.log",
    )
    system.info.update(venv=how, batching="infinity's batch handler (batch_size = the setting)")
    if system.info.get("engine") == "optimum":
        system.info.update(
            precision="int8",
            quantization="sentence-transformers export_dynamic_quantized_onnx_model, avx512_vnni",
        )
    else:  # its optimum engine did not load (the reason is in info): its torch engine
        system.name, system.label = "infinity-torch-fp32", "infinity-emb torch fp32 (own venv)"
        system.info["precision"] = "fp32"
    return system
