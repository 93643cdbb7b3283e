"""The peers run in this process: sentence-transformers (torch and its own ONNX export),
Optimum's ``ORTModelForFeatureExtraction`` and a plain ONNX Runtime session."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import bench_cache, log
from bench.throughput.base import BY_LENGTH, Config, System, by_length, ort_options, unsort


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
    info = {"backend": backend, "max_seq_length": model.max_seq_length, **(info or {})}
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
    info = {"backend": "onnxruntime via optimum", "onnx": "sentence-transformers' export",
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
    info = {"backend": "onnxruntime InferenceSession", "onnx": "bertrec model.fp32.onnx",
            "tokenizer": "transformers AutoTokenizer", "batching": BY_LENGTH}  # fmt: skip
    return System("ort-plain-fp32", "plain ORT session on bertrec fp32", info, configs,
                  Config(batch_size=common_batch), fn)  # fmt: skip
