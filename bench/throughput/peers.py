"""The peers run in this process: sentence-transformers (torch and its own ONNX export),
Optimum's ``ORTModelForFeatureExtraction``, a plain ONNX Runtime session and fastembed (on
bertrec's int8 graph and on a Qdrant-style export)."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import bench_cache, log
from bench.throughput.base import (
    BY_LENGTH,
    INPUT_ORDER,
    Config,
    System,
    by_length,
    ort_options,
    unsort,
)


def st_onnx_dir(source: Path, shape: str, threads: int) -> Path:
    """A copy of ``source`` with sentence-transformers' own ONNX export and its
    ``avx512_vnni`` dynamic int8 model in ``onnx/``, made once with ST's own API."""
    out = bench_cache(shape) / "st-onnx"
    fp32 = out / "onnx" / "model.onnx"
    int8 = out / "onnx" / "model_qint8_avx512_vnni.onnx"
    if fp32.is_file() and int8.is_file():
        return out
    from sentence_transformers import SentenceTransformer, export_dynamic_quantized_onnx_model

    log(f"sentence-transformers ONNX export + avx512_vnni int8 -> {out} ...")
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(source, out)
    model = SentenceTransformer(
        str(out),
        backend="onnx",
        device="cpu",
        model_kwargs={"provider": "CPUExecutionProvider", "session_options": ort_options(threads)},
    )
    model.save_pretrained(str(out))
    export_dynamic_quantized_onnx_model(model, "avx512_vnni", str(out))
    return out


def st_system(
    name: str,
    source: Path,
    batch_sizes: Sequence[int],
    common_batch: int,
    backend: str = "torch",
    model_kwargs: dict[str, Any] | None = None,
    info: dict[str, Any] | None = None,
) -> System:
    """``SentenceTransformer(source, backend=...).encode`` at fixed batch sizes."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(
        str(source), device="cpu", backend=backend, model_kwargs=model_kwargs or None
    )

    def fn(texts: list[str], cfg: Config) -> Any:
        return model.encode(
            texts, batch_size=cfg.batch_size or common_batch, normalize_embeddings=True
        )

    configs = [Config(batch_size=b) for b in batch_sizes]
    precision = name.rsplit("-", 1)[-1]
    info = {"backend": backend, "precision": precision, "max_seq_length": model.max_seq_length,
            **(info or {})}  # fmt: skip
    return System(name, f"sentence-transformers {backend} {name.rsplit('-', 1)[-1]}", info,
                  configs, Config(batch_size=common_batch), fn)  # fmt: skip


def optimum_system(
    st_dir: Path, max_length: int, batch_sizes: Sequence[int], common_batch: int, threads: int
) -> System:
    """Optimum on sentence-transformers' ONNX file, NumPy mean pooling and L2 norm."""
    from optimum.onnxruntime import ORTModelForFeatureExtraction
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(st_dir))
    model = ORTModelForFeatureExtraction.from_pretrained(
        str(st_dir),
        subfolder="onnx",
        file_name="model.onnx",
        provider="CPUExecutionProvider",
        session_options=ort_options(threads),
    )

    def fn(texts: list[str], cfg: Config) -> Any:
        bs = cfg.batch_size or common_batch
        order = by_length(texts)
        out = []
        for i in range(0, len(texts), bs):
            enc = tokenizer(
                [texts[j] for j in order[i : i + bs]],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="np",
            )
            hidden = np.asarray(model(**enc).last_hidden_state, dtype=np.float32)
            mask = enc["attention_mask"][..., None].astype(np.float32)
            pooled = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
            out.append(pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12))
        return unsort(np.concatenate(out), order)

    configs = [Config(batch_size=b) for b in batch_sizes]
    info = {"backend": "onnxruntime via optimum", "precision": "fp32",
            "onnx": "sentence-transformers' export",
            "pooling": "numpy mean + L2", "batching": BY_LENGTH}  # fmt: skip
    return System("optimum-ort-fp32", "Optimum ORTModel fp32 + numpy pooling", info, configs,
                  Config(batch_size=common_batch), fn)  # fmt: skip


def plain_ort_system(
    model_dir: Path, max_length: int, batch_sizes: Sequence[int], common_batch: int, threads: int
) -> System:
    """An ``InferenceSession`` on bertrec's ``model.fp32.onnx``, HF tokenizer, fixed batches."""
    import onnxruntime as ort
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    session = ort.InferenceSession(
        str(model_dir / "model.fp32.onnx"),
        sess_options=ort_options(threads),
        providers=["CPUExecutionProvider"],
    )
    names = {i.name for i in session.get_inputs()}

    def fn(texts: list[str], cfg: Config) -> Any:
        bs = cfg.batch_size or common_batch
        order = by_length(texts)
        out = []
        for i in range(0, len(texts), bs):  # fixed batch size; no token budget
            enc = tokenizer(
                [texts[j] for j in order[i : i + bs]],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="np",
            )
            feeds = {k: np.asarray(v, dtype=np.int64) for k, v in enc.items() if k in names}
            if "token_type_ids" in names and "token_type_ids" not in feeds:
                feeds["token_type_ids"] = np.zeros_like(feeds["input_ids"])
            out.append(session.run(None, feeds)[0])
        return unsort(np.concatenate(out), order)

    configs = [Config(batch_size=b) for b in batch_sizes]
    info = {"backend": "onnxruntime InferenceSession", "precision": "fp32",
            "onnx": "bertrec model.fp32.onnx",
            "tokenizer": "transformers AutoTokenizer", "batching": BY_LENGTH}  # fmt: skip
    return System("ort-plain-fp32", "plain ORT session on bertrec fp32", info, configs,
                  Config(batch_size=common_batch), fn)  # fmt: skip


# -- fastembed ------------------------------------------------------------------------------

TOKENIZER_FILES = ("tokenizer.json", "special_tokens_map.json", "config.json")


def fastembed_dir(out: Path, source: Path, onnx_file: Path, max_length: int) -> Path:
    """A folder fastembed loads with ``specific_model_path``: the ONNX file linked as
    ``model.onnx``, the tokenizer files of ``source``, and a tokenizer_config.json whose
    ``model_max_length`` is ``max_length``. fastembed truncates at that key (Qdrant's
    MiniLM export says 512 where sentence-transformers stops at 256); setting it to every
    system's limit keeps the work equal."""
    out.mkdir(parents=True, exist_ok=True)
    link = out / "model.onnx"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(onnx_file.resolve())
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, out / name)
    cfg = json.loads((source / "tokenizer_config.json").read_text(encoding="utf-8"))
    cfg["model_max_length"] = max_length
    cfg.pop("max_length", None)
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=1), encoding="utf-8")
    return out


def fastembed_system(
    name: str,
    model_path: Path,
    dim: int,
    pooled: bool,
    batch_sizes: Sequence[int],
    common_batch: int,
    threads: int,
    info: dict[str, Any],
) -> System:
    """``fastembed.TextEmbedding`` on a local folder, registered as a custom model (it
    cannot download here): ``pooled`` graphs (bertrec's) give the sentence vector as the
    ``sentence_embedding`` output; the others (a Qdrant-style export) give token states
    that fastembed mean-pools and normalizes, as it does for its own MiniLM."""
    from fastembed import TextEmbedding
    from fastembed.common.model_description import ModelSource, PoolingType

    model_id = f"bertrec-bench/{name}-{abs(hash(str(model_path))) % 10**8}"
    if not any(m["model"] == model_id for m in TextEmbedding.list_supported_models()):
        TextEmbedding.add_custom_model(
            model=model_id,
            pooling=PoolingType.DISABLED if pooled else PoolingType.MEAN,
            normalization=not pooled,
            sources=ModelSource(hf="local/only"),
            dim=dim,
            model_file="model.onnx",
            output_name="sentence_embedding" if pooled else None,
        )
    model = TextEmbedding(
        model_id,
        cache_dir=tempfile.mkdtemp(prefix="bertrec-fastembed-"),
        threads=threads,
        providers=["CPUExecutionProvider"],
        specific_model_path=str(model_path),
        local_files_only=True,
    )

    def fn(texts: list[str], cfg: Config) -> Any:
        return np.stack(list(model.embed(texts, batch_size=cfg.batch_size or common_batch)))

    import fastembed

    configs = [Config(batch_size=b) for b in batch_sizes]
    info = {"backend": "fastembed TextEmbedding (onnxruntime)", "fastembed": fastembed.__version__,
            "batching": INPUT_ORDER, **info}  # fmt: skip
    system = System(name, f"fastembed {info.get('graph', '')} {info.get('precision', '')}".strip(),
                    info, configs, Config(batch_size=common_batch), fn)  # fmt: skip
    system.batching = "input-order"
    return system
