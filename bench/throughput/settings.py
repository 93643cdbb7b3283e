"""What a throughput run covers: the model shapes, their systems and sweep sizes, and the
checkpoint each shape encodes with."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

from bench.common import bench_cache, log, minilm_source

REFERENCE = "st-torch-fp32"

MINILM_SYSTEMS = (
    "bertrec-ort-fp32",
    "bertrec-ort-int8",
    "bertrec-openvino",
    "bertrec-auto",
    "st-torch-fp32",
    "st-torch-bf16",
    "st-onnx-fp32",
    "st-onnx-int8",
    "st-openvino",
    "optimum-ort-fp32",
    "ort-plain-fp32",
    "fastembed-bertrec-int8",
    "fastembed-qdrant-fp32",
    "infinity-optimum-int8",
)
BERT_BASE_SYSTEMS = (
    "bertrec-ort-fp32",
    "bertrec-ort-int8",
    "bertrec-openvino",
    "st-torch-fp32",
    "st-torch-bf16",
)
# Long texts at 512 tokens: bertrec, the reference and the peers that were fastest on
# MiniLM (each bert-base pass costs ~10x MiniLM's).
BERT_BASE_LONG_SYSTEMS = (
    *BERT_BASE_SYSTEMS,
    "bertrec-auto",
    "st-onnx-int8",
    "st-openvino",
    "fastembed-bertrec-int8",
)


@dataclass(frozen=True)
class ShapeSettings:
    """One model shape and how much of the matrix it gets.

    Attributes:
        name: the record's key: the model, and ``-long`` for the long workload.
        model: ``minilm`` (the real all-MiniLM-L6-v2) or ``bert-base`` (random weights,
            max_length 512).
        workload: ``short`` (the text mix) or ``long`` (128-512-token descriptions).
        texts: texts of the mix; fidelity is measured on all of them.
        time_texts: texts per final (timed) run: the first ones of the shuffled mix.
        sweep_texts: texts per sweep run (the first ones of the shuffled mix).
        warmup_texts: texts per warm-up call.
        systems: which systems to run.
        batch_sizes: the sweep for systems whose knob is rows per batch.
        token_budgets: the sweep of bertrec's ``max_batch_tokens``.
        latency_texts: texts timed one per call (0: no latency figures).
        fidelity: compare embeddings with the reference (pointless for random weights).
        common_batch: rows per batch of the common setting (None: the run's).
    """

    name: str
    model: str
    workload: str
    texts: int
    time_texts: int
    sweep_texts: int
    warmup_texts: int
    systems: tuple[str, ...]
    batch_sizes: tuple[int, ...]
    token_budgets: tuple[int, ...]
    latency_texts: int
    fidelity: bool
    common_batch: int | None = None


@dataclass(frozen=True)
class Settings:
    """The whole run. ``threads`` is every system's thread budget."""

    shapes: tuple[ShapeSettings, ...]
    threads: int
    repeats: int = 3
    sweep_rounds: int = 2
    common_batch: int = 32
    seed: int = 0
    quick: bool = False
    build_peer_venv: bool = True


MINILM = ShapeSettings(
    name="minilm",
    model="minilm",
    workload="short",
    texts=2048,
    time_texts=512,
    sweep_texts=128,
    warmup_texts=16,
    systems=MINILM_SYSTEMS,
    batch_sizes=(8, 16, 32, 64),
    token_budgets=(256, 512, 1024, 2048, 4096),
    latency_texts=64,
    fidelity=True,
)
BERT_BASE = ShapeSettings(
    name="bert-base",
    model="bert-base",
    workload="short",
    # About 8x MiniLM's work per token (twice the layers, four times the width squared),
    # so fewer texts. Two settings per system (batch 8 or bertrec's default budget, and
    # batch 32) go straight to the final runs; there is nothing to sweep.
    texts=96,
    time_texts=96,
    sweep_texts=32,
    warmup_texts=8,
    systems=BERT_BASE_SYSTEMS,
    batch_sizes=(8, 32),
    token_budgets=(1024,),
    latency_texts=0,
    fidelity=False,
)


# Long texts cost ~8x a short one on MiniLM (~230 tokens after truncation at 256, against
# 29) and attention grows with the square of the width, so fewer texts and smaller batches.
MINILM_LONG = ShapeSettings(
    name="minilm-long",
    model="minilm",
    workload="long",
    texts=256,
    time_texts=128,
    sweep_texts=48,
    warmup_texts=8,
    systems=MINILM_SYSTEMS,
    batch_sizes=(4, 8, 16, 32),
    token_budgets=(1024, 2048, 4096, 8192),
    latency_texts=16,
    fidelity=True,
    common_batch=16,
)
BERT_BASE_LONG = ShapeSettings(
    name="bert-base-long",
    model="bert-base",
    workload="long",
    # ~60 GFLOP a text at 512 tokens: two settings per system (batch 4 or bertrec's
    # default budget, and batch 8), straight to the final runs.
    texts=32,
    time_texts=32,
    sweep_texts=8,
    warmup_texts=4,
    systems=BERT_BASE_LONG_SYSTEMS,
    batch_sizes=(4, 8),
    token_budgets=(1024,),
    latency_texts=0,
    fidelity=False,
    common_batch=8,
)
SHAPES = {
    ("minilm", "short"): MINILM,
    ("bert-base", "short"): BERT_BASE,
    ("minilm", "long"): MINILM_LONG,
    ("bert-base", "long"): BERT_BASE_LONG,
}


def _picked(models: str, workload: str) -> list[tuple[str, str]]:
    names = ("minilm", "bert-base") if models == "both" else (models,)
    kinds = ("short", "long") if workload == "both" else (workload,)
    return [(m, w) for w in kinds for m in names]


def full_settings(
    models: str, threads: int, build_peer_venv: bool = True, workload: str = "both"
) -> Settings:
    shapes = tuple(SHAPES[key] for key in _picked(models, workload))
    return Settings(shapes=shapes, threads=threads, build_peer_venv=build_peer_venv)


def quick_settings(threads: int, workload: str = "both") -> Settings:
    """CI smoke: every code path on a few texts, MiniLM only, no peer venv build."""
    short = replace(
        MINILM,
        texts=96,
        time_texts=64,
        sweep_texts=32,
        warmup_texts=8,
        batch_sizes=(8, 32),
        token_budgets=(512, 2048),
        latency_texts=8,
    )
    long = replace(
        MINILM_LONG,
        texts=24,
        time_texts=16,
        sweep_texts=8,
        # Two batches at bertrec's default budget: OpenVINO's multi-batch (streams) model
        # is compiled on the first call that has several batches, so warm-up needs one.
        warmup_texts=8,
        batch_sizes=(4, 16),
        token_budgets=(1024, 4096),
        latency_texts=4,
    )
    quick = {"short": short, "long": long}
    return Settings(
        shapes=tuple(quick[w] for _, w in _picked("minilm", workload)),
        threads=threads,
        repeats=1,
        sweep_rounds=1,
        quick=True,
        build_peer_venv=False,
    )


# -- the checkpoints ------------------------------------------------------------------------


def shape_source(shape: ShapeSettings) -> Path:
    """The sentence-transformers checkpoint ``shape`` encodes with."""
    return minilm_source() if shape.model == "minilm" else bert_base_checkpoint()


def st_max_length(source: Path) -> int:
    """sentence-transformers' max_seq_length for ``source`` (what every system truncates to)."""
    cfg = source / "sentence_bert_config.json"
    if cfg.is_file():
        return int(json.loads(cfg.read_text(encoding="utf-8")).get("max_seq_length", 512))
    return 512


BERT_BASE_STAMP = (
    "bert-base random init v2: seed 0, BertConfig 12x768x3072x12, MiniLM vocab, max_length 512"
)
# bert-base's own limit: the long workload runs it at 512 tokens (MiniLM's is 256).
BERT_BASE_MAX_LENGTH = 512


def bert_base_checkpoint() -> Path:
    """A randomly initialised bert-base-sized BERT in sentence-transformers layout (mean
    pooling, normalize) with MiniLM's tokenizer, so the text mix tokenizes as for MiniLM."""
    root = bench_cache("bert-base")
    out = root / "checkpoint"
    stamp = root / "checkpoint.stamp"
    if stamp.is_file() and stamp.read_text(encoding="utf-8") == BERT_BASE_STAMP:
        return out
    import sentence_transformers.models as models
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer, BertConfig, BertModel

    log(f"building the random bert-base checkpoint -> {out} ...")
    src = minilm_source()
    tokenizer = AutoTokenizer.from_pretrained(str(src))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        max_position_embeddings=512,
    )
    torch.manual_seed(0)
    hf = root / "hf"
    shutil.rmtree(hf, ignore_errors=True)
    BertModel(config).save_pretrained(str(hf))
    tokenizer.save_pretrained(str(hf))
    transformer = models.Transformer(str(hf), max_seq_length=BERT_BASE_MAX_LENGTH)
    pooling = models.Pooling(768, pooling_mode="mean")
    shutil.rmtree(out, ignore_errors=True)
    SentenceTransformer(modules=[transformer, pooling, models.Normalize()], device="cpu").save(
        str(out)
    )
    shutil.rmtree(hf, ignore_errors=True)
    stamp.write_text(BERT_BASE_STAMP, encoding="utf-8")
    return out
