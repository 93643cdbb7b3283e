"""Encode throughput and batch-1 latency of bertrec against its peers, on one text mix.

``python -m bench.throughput [--quick] [--model minilm|bert-base|both]`` writes
bench/results/throughput-<UTC ts>.json (machine, versions, threads, settings, every figure
per system and batch setting) and prints one table per model shape.

Method (bench/README.md has the why of each choice):
  * one fixed text mix (bench.common.load_text_mix), the same texts for every system;
  * every system gets the same thread budget (torch threads = ORT intra-op threads =
    OpenVINO threads = the usable cores);
  * sweep: each batch setting on the first ``sweep_texts`` texts, after one warm-up per
    system and setting, interleaved across systems (A B C ... A B C ...), in two rounds
    (settings forwards, then backwards; the faster run counts), to find each system's
    best setting;
  * final: each system's best setting and the common batch size 32 on the first
    ``time_texts`` texts, ``repeats`` times interleaved; the median is the figure, and the
    faster of the two is the system's best;
  * latency: one text per call, p50/p90/p99, interleaved in blocks;
  * fidelity: each system's embeddings at batch 32 against sentence-transformers
    PyTorch fp32 (normalized) on the whole mix.

The budget that sets these sizes: one pass of the 11 MiniLM systems over 2,048 texts
takes about 90 s on 2 idle cores, so the full matrix (5-6 settings, 3 repeats, all
texts) would take half an hour; the sizes below keep a full run near 10 minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import selectors
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bench.common import (
    TextMix,
    cache_dir,
    exported_model_dir,
    load_text_mix,
    log,
    machine_info,
    machine_line,
    median,
    minilm_source,
    percentiles,
    usable_cores,
    versions,
    write_record,
)

PEERS_DIR = Path(__file__).resolve().parent / "peers"
OV_REQUIREMENTS = PEERS_DIR / "openvino-requirements.txt"
OV_NODEPS = PEERS_DIR / "openvino-nodeps.txt"
OV_WORKER = PEERS_DIR / "st_openvino_worker.py"

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
)
BERT_BASE_SYSTEMS = (
    "bertrec-ort-fp32",
    "bertrec-ort-int8",
    "bertrec-openvino",
    "st-torch-fp32",
    "st-torch-bf16",
)


# -- settings -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShapeSettings:
    """One model shape and how much of the matrix it gets.

    Attributes:
        name: ``minilm`` (the real all-MiniLM-L6-v2) or ``bert-base`` (random weights).
        texts: texts of the mix; fidelity is measured on all of them.
        time_texts: texts per final (timed) run: the first ones of the shuffled mix.
        sweep_texts: texts per sweep run (the first ones of the shuffled mix).
        warmup_texts: texts per warm-up call.
        systems: which systems to run.
        batch_sizes: the sweep for systems whose knob is rows per batch.
        token_budgets: the sweep of bertrec's ``max_batch_tokens``.
        latency_texts: texts timed one per call (0: no latency figures).
        fidelity: compare embeddings with the reference (pointless for random weights).
    """

    name: str
    texts: int
    time_texts: int
    sweep_texts: int
    warmup_texts: int
    systems: tuple[str, ...]
    batch_sizes: tuple[int, ...]
    token_budgets: tuple[int, ...]
    latency_texts: int
    fidelity: bool


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
    # About 8x MiniLM's work per token: ST fp32 manages ~20 texts/s on 2 cores. Two
    # settings per system (batch 8 or bertrec's default budget, and batch 32) go straight
    # to the final runs; there is nothing to sweep.
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


def full_settings(models: str, threads: int, build_peer_venv: bool = True) -> Settings:
    shapes = {"minilm": (MINILM,), "bert-base": (BERT_BASE,), "both": (MINILM, BERT_BASE)}
    return Settings(shapes=shapes[models], threads=threads, build_peer_venv=build_peer_venv)


def quick_settings(threads: int) -> Settings:
    """CI smoke: every code path on a few texts, MiniLM only, no peer venv build."""
    shape = replace(
        MINILM,
        texts=96,
        time_texts=64,
        sweep_texts=32,
        warmup_texts=8,
        batch_sizes=(8, 32),
        token_budgets=(512, 2048),
        latency_texts=8,
    )
    return Settings(
        shapes=(shape,),
        threads=threads,
        repeats=1,
        sweep_rounds=1,
        quick=True,
        build_peer_venv=False,
    )


# -- systems --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """One batch setting: rows per batch, or bertrec's padded-token budget, or both."""

    batch_size: int | None = None
    max_batch_tokens: int | None = None

    @property
    def label(self) -> str:
        if self.batch_size is not None:
            return f"bs={self.batch_size}"
        if self.max_batch_tokens is not None:
            return f"tokens={self.max_batch_tokens}"
        return "default"


@dataclass(frozen=True)
class Run:
    seconds: float
    cpu_s: float
    embeddings: NDArray[np.float32] | None


class SystemFailed(RuntimeError):
    """A system could not be built or stopped working; the run goes on without it."""


def _err(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text if len(text) <= 1500 else text[:1500] + " ..."


class System:
    """An encoder under test, run in this process.

    Args:
        name: short id used in the record.
        label: what the table calls it.
        info: backend, precision and whatever else identifies the configuration.
        configs: batch settings to sweep.
        common: the setting used for the common batch size and fidelity.
        fn: encodes a list of texts at a setting, returns (n, dim) float32.
    """

    def __init__(
        self,
        name: str,
        label: str,
        info: dict[str, Any],
        configs: Sequence[Config],
        common: Config,
        fn: Callable[[list[str], Config], Any],
    ) -> None:
        self.name = name
        self.label = label
        self.info = info
        self.configs = list(configs)
        self.common = common
        self._fn = fn
        self.texts: list[str] = []

    def prepare(self, texts: list[str]) -> None:
        self.texts = texts

    def encode(self, start: int, stop: int, config: Config, keep: bool = False) -> Run:
        batch = self.texts[start:stop]
        c0, t0 = time.process_time(), time.perf_counter()
        out = self._fn(batch, config)
        seconds, cpu_s = time.perf_counter() - t0, time.process_time() - c0
        emb = np.asarray(out, dtype=np.float32) if keep else None
        return Run(seconds, cpu_s, emb)

    def latency(self, indices: Sequence[int]) -> list[float]:
        one = Config(batch_size=1)
        times = []
        for i in indices:
            t0 = time.perf_counter()
            self._fn([self.texts[i]], one)
            times.append(time.perf_counter() - t0)
        return times

    def close(self) -> None:
        pass


class PeerSystem(System):
    """A system served by a worker process in its own venv, over JSON lines."""

    def __init__(
        self,
        name: str,
        label: str,
        python: Path,
        worker: Path,
        load: dict[str, Any],
        configs: Sequence[Config],
        common: Config,
        log_path: Path,
        timeout_s: float = 900.0,
    ) -> None:
        self._tmp = Path(tempfile.mkdtemp(prefix="bertrec-peer-"))
        self._timeout = timeout_s
        self._log_path = log_path
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
        self._log = log_path.open("w", encoding="utf-8")
        self._proc = subprocess.Popen(
            [str(python), str(worker)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env=env,
        )
        info = self._call({"op": "load", **load})["info"]
        super().__init__(name, label, info, configs, common, fn=lambda t, c: None)

    def _call(self, req: dict[str, Any]) -> dict[str, Any]:
        proc = self._proc
        assert proc.stdin is not None and proc.stdout is not None  # set by Popen(PIPE)
        try:
            proc.stdin.write(json.dumps(req) + "\n")
            proc.stdin.flush()
        except BrokenPipeError as exc:
            raise SystemFailed(f"peer worker exited ({proc.poll()}): {self._tail()}") from exc
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        ready = sel.select(self._timeout)
        sel.close()
        if not ready:
            raise SystemFailed(f"peer worker gave no answer to {req['op']!r} in {self._timeout}s")
        line = proc.stdout.readline()
        if not line:
            raise SystemFailed(f"peer worker exited ({proc.wait()}): {self._tail()}")
        reply: dict[str, Any] = json.loads(line)
        if not reply.get("ok"):
            raise SystemFailed(str(reply.get("error")))
        return reply

    def _tail(self, n: int = 600) -> str:
        self._log.flush()
        text = self._log_path.read_text(encoding="utf-8", errors="replace")
        return text[-n:].strip() or "(no stderr)"

    def prepare(self, texts: list[str]) -> None:
        self.texts = texts
        self._call({"op": "texts", "texts": texts})

    def encode(self, start: int, stop: int, config: Config, keep: bool = False) -> Run:
        save = str(self._tmp / "emb.npy") if keep else None
        reply = self._call(
            {
                "op": "encode",
                "start": start,
                "stop": stop,
                "batch_size": config.batch_size,
                "save": save,
            }
        )
        emb = np.load(save).astype(np.float32) if save else None
        return Run(float(reply["seconds"]), float(reply["cpu_s"]), emb)

    def latency(self, indices: Sequence[int]) -> list[float]:
        reply = self._call({"op": "latency", "indices": [int(i) for i in indices]})
        return [float(x) for x in reply["seconds"]]

    def close(self) -> None:
        with contextlib.suppress(Exception):
            assert self._proc.stdin is not None
            self._proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
        self._log.close()
        shutil.rmtree(self._tmp, ignore_errors=True)


# -- model directories ----------------------------------------------------------------------


def st_max_length(source: Path) -> int:
    """sentence-transformers' max_seq_length for ``source`` (what every system truncates to)."""
    cfg = source / "sentence_bert_config.json"
    if cfg.is_file():
        return int(json.loads(cfg.read_text(encoding="utf-8")).get("max_seq_length", 512))
    return 512


def st_onnx_dir(source: Path, shape: str, threads: int) -> Path:
    """A copy of ``source`` with sentence-transformers' own ONNX export and its
    ``avx512_vnni`` dynamic int8 model in ``onnx/``, made once with ST's own API."""
    out = cache_dir(shape) / "st-onnx"
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
        model_kwargs={"provider": "CPUExecutionProvider", "session_options": _ort_options(threads)},
    )
    model.save_pretrained(str(out))
    export_dynamic_quantized_onnx_model(model, "avx512_vnni", str(out))
    return out


BERT_BASE_STAMP = "bert-base random init v1: seed 0, BertConfig 12x768x3072x12, MiniLM vocab"


def bert_base_checkpoint() -> Path:
    """A randomly initialised bert-base-sized BERT in sentence-transformers layout (mean
    pooling, normalize) with MiniLM's tokenizer, so the text mix tokenizes as for MiniLM."""
    root = cache_dir("bert-base")
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
    transformer = models.Transformer(str(hf), max_seq_length=st_max_length(src))
    pooling = models.Pooling(768, pooling_mode="mean")
    shutil.rmtree(out, ignore_errors=True)
    SentenceTransformer(modules=[transformer, pooling, models.Normalize()], device="cpu").save(
        str(out)
    )
    shutil.rmtree(hf, ignore_errors=True)
    stamp.write_text(BERT_BASE_STAMP, encoding="utf-8")
    return out


def bertrec_model_dir(source: Path, shape: str) -> tuple[Path, str | None]:
    """The bertrec export (fp32 + int8) and, if int8 could not pass its gate, why.

    The int8 accuracy gate may refuse a random-weight model; then fp32 alone is exported
    and the refusal is remembered, so later runs do not pay for the attempt again.
    """
    from bertrec.runtime.errors import ValidationFailedError

    refused = cache_dir(shape) / "bertrec.int8-refused"
    if refused.is_file():
        return exported_model_dir(source, shape, ("fp32",)), refused.read_text(encoding="utf-8")
    try:
        return exported_model_dir(source, shape, ("fp32", "int8")), None
    except ValidationFailedError as exc:
        refused.write_text(_err(exc), encoding="utf-8")
        return exported_model_dir(source, shape, ("fp32",)), _err(exc)


# -- the peer venv --------------------------------------------------------------------------


def _requirements_pin(path: Path, package: str) -> str:
    for line in path.read_text(encoding="utf-8").splitlines():
        spec = line.split("#", 1)[0].strip()
        if spec.replace(" ", "").startswith(f"{package}=="):
            return spec
    raise ValueError(f"{path} pins no {package}==...; add the CPU wheel's version")


def peer_venv(build: bool) -> tuple[Path | None, str]:
    """The python of the sentence-transformers + optimum-intel venv, and how it was got.

    Built once into ~/.cache/bertrec/bench/venv-st-openvino (about 4 minutes, ~1.6 GB):
    torch's CPU wheel first, then the requirements, then optimum-intel without its
    dependencies (see bench/peers/openvino-requirements.txt for why).
    """
    venv = cache_dir() / "venv-st-openvino"
    python = venv / "bin" / "python"
    h = hashlib.sha256(sys.version.encode())
    for f in (OV_REQUIREMENTS, OV_NODEPS):
        h.update(f.read_bytes())
    want = h.hexdigest()
    stamp = venv / ".bench-stamp"
    if python.is_file() and stamp.is_file() and stamp.read_text(encoding="utf-8") == want:
        return python, "cached"
    if not build:
        return None, f"peer venv {venv} not built (--quick and --no-peer-venv never build it)"
    log_path = cache_dir() / "venv-st-openvino.log"
    log(f"building the peer venv {venv} (once; ~4 minutes; log: {log_path}) ...")
    shutil.rmtree(venv, ignore_errors=True)
    pip = [str(python), "-m", "pip", "install", "-q"]
    steps = [
        [sys.executable, "-m", "venv", str(venv)],
        [*pip, _requirements_pin(OV_REQUIREMENTS, "torch")],
        [*pip, "-r", str(OV_REQUIREMENTS)],
        [*pip, "--no-deps", "-r", str(OV_NODEPS)],
    ]
    with log_path.open("w", encoding="utf-8") as out:
        for cmd in steps:
            out.write(f"$ {' '.join(cmd)}\n")
            out.flush()
            rc = subprocess.call(cmd, stdout=out, stderr=subprocess.STDOUT)
            if rc != 0:
                tail = log_path.read_text(encoding="utf-8", errors="replace")[-800:]
                return None, f"building the peer venv failed: `{' '.join(cmd)}` exited {rc}: {tail}"
    stamp.write_text(want, encoding="utf-8")
    return python, "built now"


# -- building the systems -------------------------------------------------------------------


def _ort_options(threads: int) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return so


def _bertrec_system(
    name: str, model_dir: Path, budgets: Sequence[int], common_batch: int, **kwargs: Any
) -> System:
    import bertrec

    enc = bertrec.Encoder(model_dir, **kwargs)
    default_budget = enc.max_batch_tokens

    def fn(texts: list[str], cfg: Config) -> Any:
        # One encoder for every setting: an OpenVINO compile per setting would cost more
        # than the runs; max_batch_tokens is read at each encode() call.
        enc.max_batch_tokens = cfg.max_batch_tokens or default_budget
        return enc.encode(texts, batch_size=cfg.batch_size)

    # Batch size 32 exactly: a budget no 32-row batch reaches, so rows alone decide.
    common = Config(batch_size=common_batch, max_batch_tokens=common_batch * enc.max_length)
    configs = [Config(max_batch_tokens=b) for b in budgets] + [common]
    if name == "bertrec-auto":  # what Encoder() with no arguments does, nothing swept
        configs, common = [Config()], Config()
    info = {
        "backend": enc.backend,
        "precision": enc.precision,
        "backend_reason": enc.backend_reason,
        "providers": enc.providers,
        "threads": enc.threads,
        "default_max_batch_tokens": default_budget,
        "max_length": enc.max_length,
        "constructor": {k: v for k, v in kwargs.items()},
    }
    label = f"bertrec {enc.backend} {enc.precision}" + (" (auto)" if name == "bertrec-auto" else "")
    return System(name, label, info, configs, common, fn)


def _st_system(
    name: str,
    source: Path,
    batch_sizes: Sequence[int],
    common_batch: int,
    backend: str = "torch",
    model_kwargs: dict[str, Any] | None = None,
    info: dict[str, Any] | None = None,
) -> System:
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


# In input order, a batch of short titles gets padded to the one paragraph among them (the
# mix has texts of 3 to 200+ tokens): several times slower in a trial run, from padding, not
# from the runtime. Sorting by character length, as sentence-transformers' encode() does, keeps
# the comparison about the runtime; fixed rows per batch remain the difference to bertrec.
BY_LENGTH = "fixed batch size, texts sorted by character length (as sentence-transformers)"


def _by_length(texts: list[str]) -> list[int]:
    return sorted(range(len(texts)), key=lambda i: -len(texts[i]))


def _unsort(rows: NDArray[np.float32], order: list[int]) -> NDArray[np.float32]:
    out = np.empty_like(rows)
    out[np.asarray(order)] = rows
    return out


def _optimum_system(
    st_dir: Path, max_length: int, batch_sizes: Sequence[int], common_batch: int, threads: int
) -> System:
    from optimum.onnxruntime import ORTModelForFeatureExtraction
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(st_dir))
    model = ORTModelForFeatureExtraction.from_pretrained(
        str(st_dir),
        subfolder="onnx",
        file_name="model.onnx",
        provider="CPUExecutionProvider",
        session_options=_ort_options(threads),
    )

    def fn(texts: list[str], cfg: Config) -> Any:
        bs = cfg.batch_size or common_batch
        order = _by_length(texts)
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
        return _unsort(np.concatenate(out), order)

    configs = [Config(batch_size=b) for b in batch_sizes]
    info = {"backend": "onnxruntime via optimum", "onnx": "sentence-transformers' export",
            "pooling": "numpy mean + L2", "batching": BY_LENGTH}  # fmt: skip
    return System("optimum-ort-fp32", "Optimum ORTModel fp32 + numpy pooling", info, configs,
                  Config(batch_size=common_batch), fn)  # fmt: skip


def _plain_ort_system(
    model_dir: Path, max_length: int, batch_sizes: Sequence[int], common_batch: int, threads: int
) -> System:
    import onnxruntime as ort
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    session = ort.InferenceSession(
        str(model_dir / "model.fp32.onnx"),
        sess_options=_ort_options(threads),
        providers=["CPUExecutionProvider"],
    )
    names = {i.name for i in session.get_inputs()}

    def fn(texts: list[str], cfg: Config) -> Any:
        bs = cfg.batch_size or common_batch
        order = _by_length(texts)
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
        return _unsort(np.concatenate(out), order)

    configs = [Config(batch_size=b) for b in batch_sizes]
    info = {"backend": "onnxruntime InferenceSession", "onnx": "bertrec model.fp32.onnx",
            "tokenizer": "transformers AutoTokenizer", "batching": BY_LENGTH}  # fmt: skip
    return System("ort-plain-fp32", "plain ORT session on bertrec fp32", info, configs,
                  Config(batch_size=common_batch), fn)  # fmt: skip


def build_systems(
    shape: ShapeSettings, settings: Settings, source: Path
) -> tuple[list[System], dict[str, dict[str, Any]], int]:
    """Every system of ``shape`` that could be built, why the others could not, and the
    token limit every system truncates to."""
    import torch

    from bertrec.runtime.openvino_runner import cpu_has_bf16

    threads, common = settings.threads, settings.common_batch
    failed: dict[str, dict[str, Any]] = {}
    systems: list[System] = []
    cache: dict[str, Any] = {}

    def needs(key: str, make: Callable[[], Any]) -> Any:
        if key not in cache:
            try:
                cache[key] = make()
            except Exception as exc:
                cache[key] = exc
        if isinstance(cache[key], Exception):
            raise cache[key]
        return cache[key]

    # bertrec's manifest holds the limit its exporter resolved from the source (newer
    # sentence-transformers configs no longer carry max_seq_length where old ones did).
    try:
        from bertrec.runtime.manifest import read_manifest

        bertrec_dir = needs("bertrec", lambda: bertrec_model_dir(source, shape.name))[0]
        max_length = read_manifest(bertrec_dir).max_length
    except Exception:
        max_length = st_max_length(source)
    ov_precision = "bf16" if cpu_has_bf16() else "fp32"
    builders: dict[str, Callable[[], System]] = {
        "bertrec-ort-fp32": lambda: _bertrec_system(
            "bertrec-ort-fp32", needs("bertrec", lambda: bertrec_model_dir(source, shape.name))[0],
            shape.token_budgets, common, precision="fp32", device="cpu",
            backend="onnxruntime", threads=threads),
        "bertrec-ort-int8": lambda: _bertrec_system(
            "bertrec-ort-int8", _int8_dir(needs("bertrec", lambda: bertrec_model_dir(
                source, shape.name))), shape.token_budgets, common, precision="int8",
            device="cpu", backend="onnxruntime", threads=threads),
        "bertrec-openvino": lambda: _bertrec_system(
            f"bertrec-openvino-{ov_precision}",
            needs("bertrec", lambda: bertrec_model_dir(source, shape.name))[0],
            shape.token_budgets, common, precision=ov_precision, device="cpu",
            backend="openvino", threads=threads),
        "bertrec-auto": lambda: _bertrec_system(
            "bertrec-auto", needs("bertrec", lambda: bertrec_model_dir(source, shape.name))[0],
            shape.token_budgets, common),
        "st-torch-fp32": lambda: _st_system(
            "st-torch-fp32", source, shape.batch_sizes, common),
        "st-torch-bf16": lambda: _st_system(
            "st-torch-bf16", source, shape.batch_sizes, common,
            model_kwargs={"torch_dtype": torch.bfloat16}, info={"torch_dtype": "bfloat16"}),
        "st-onnx-fp32": lambda: _st_system(
            "st-onnx-fp32", needs("st-onnx", lambda: st_onnx_dir(source, shape.name, threads)),
            shape.batch_sizes, common, backend="onnx",
            model_kwargs={"provider": "CPUExecutionProvider",
                          "session_options": _ort_options(threads),
                          "file_name": "onnx/model.onnx"},
            info={"file": "onnx/model.onnx"}),
        "st-onnx-int8": lambda: _st_system(
            "st-onnx-int8", needs("st-onnx", lambda: st_onnx_dir(source, shape.name, threads)),
            shape.batch_sizes, common, backend="onnx",
            model_kwargs={"provider": "CPUExecutionProvider",
                          "session_options": _ort_options(threads),
                          "file_name": "onnx/model_qint8_avx512_vnni.onnx"},
            info={"file": "onnx/model_qint8_avx512_vnni.onnx",
                  "quantization": "export_dynamic_quantized_onnx_model(model, 'avx512_vnni')"}),
        "st-openvino": lambda: _st_openvino_system(shape, settings, source),
        "optimum-ort-fp32": lambda: _optimum_system(
            needs("st-onnx", lambda: st_onnx_dir(source, shape.name, threads)), max_length,
            shape.batch_sizes, common, threads),
        "ort-plain-fp32": lambda: _plain_ort_system(
            needs("bertrec", lambda: bertrec_model_dir(source, shape.name))[0], max_length,
            shape.batch_sizes, common, threads),
    }  # fmt: skip
    for key in shape.systems:
        t0 = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                system = builders[key]()
        except Exception as exc:
            failed[key] = {"status": "failed", "stage": "load", "error": _err(exc)}
            log(f"  {key}: FAILED to load: {_err(exc)[:300]}")
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


def _int8_dir(model: tuple[Path, str | None]) -> Path:
    path, refused = model
    if refused:
        raise SystemFailed(f"bertrec's int8 export was refused by its accuracy gate: {refused}")
    return path


def _st_openvino_system(shape: ShapeSettings, settings: Settings, source: Path) -> System:
    python, how = peer_venv(settings.build_peer_venv)
    if python is None:
        raise SystemFailed(how)
    system = PeerSystem(
        "st-openvino",
        "sentence-transformers openvino (own venv)",
        python,
        OV_WORKER,
        {
            "model_dir": str(source),
            "export_dir": str(cache_dir(shape.name) / "st-openvino"),
            "threads": settings.threads,
        },
        [Config(batch_size=b) for b in shape.batch_sizes],
        Config(batch_size=settings.common_batch),
        log_path=cache_dir() / "st-openvino-worker.log",
    )
    system.info["venv"] = how
    # OpenVINO picks the inference precision itself (bf16 on CPUs with bf16 units).
    hint = str(system.info.get("INFERENCE_PRECISION_HINT", ""))
    precision = "bf16" if "bf16" in hint or "bfloat16" in hint else "fp32" if "f32" in hint else "?"
    system.info["precision"] = precision
    system.label = f"sentence-transformers openvino {precision}"
    return system


# -- running --------------------------------------------------------------------------------


class Bench:
    """Runs the phases for one model shape and collects every figure."""

    def __init__(
        self, shape: ShapeSettings, settings: Settings, mix: TextMix, tokens: NDArray[np.int64]
    ) -> None:
        self.shape = shape
        self.settings = settings
        self.mix = mix
        self.tokens = tokens
        self.failed: dict[str, dict[str, Any]] = {}
        self.runs: dict[tuple[str, str, str], list[Run]] = {}
        self.embeddings: dict[str, NDArray[np.float32]] = {}
        self.latencies: dict[str, list[float]] = {}
        self.systems: list[System] = []

    def _call(self, system: System, what: str, fn: Callable[[], Any]) -> Any:
        """Run one step of a system; a failure drops the system, not the run."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return fn()
        except Exception as exc:
            self.failed[system.name] = {"status": "failed", "stage": what, "error": _err(exc)}
            log(f"  {system.name}: FAILED during {what}: {_err(exc)[:300]}")
            self.systems = [s for s in self.systems if s is not system]
            system.close()
            return None

    def _timed(self, system: System, phase: str, cfg: Config, stop: int, keep: bool) -> None:
        run = self._call(system, f"{phase} {cfg.label}", lambda: system.encode(0, stop, cfg, keep))
        if run is not None:
            self.runs.setdefault((system.name, phase, cfg.label), []).append(run)
            if run.embeddings is not None:
                self.embeddings[system.name] = run.embeddings

    def warm(self, system: System, cfg: Config) -> None:
        w = min(self.shape.warmup_texts, self.shape.texts)
        self._call(system, f"warm-up {cfg.label}", lambda: system.encode(0, w, cfg))

    def run(self, systems: list[System]) -> None:
        self.systems = list(systems)
        for s in list(self.systems):
            self._call(s, "prepare", partial(s.prepare, self.mix.texts[: self.shape.texts]))
        t0 = time.perf_counter()
        # Sweep: setting i of every system, then setting i+1 ...; one warm-up before each
        # setting's first run. The second round goes through the settings backwards, and a
        # setting's figure is its faster run: load from other processes that comes or goes
        # during the sweep then cannot favour the settings that happened to run first.
        sweep_n = min(self.shape.sweep_texts, self.shape.texts)
        k = max((len(s.configs) for s in self.systems), default=0)
        for rnd in range(self.settings.sweep_rounds):
            for i in range(k) if rnd % 2 == 0 else reversed(range(k)):
                for s in list(self.systems):
                    if self.swept(s) and i < len(s.configs):
                        if rnd == 0:
                            self.warm(s, s.configs[i])
                        self._timed(s, "sweep", s.configs[i], sweep_n, keep=False)
        if any(self.swept(s) for s in self.systems):
            log(f"  sweep done in {time.perf_counter() - t0:.0f}s")
        t0 = time.perf_counter()
        finals = {s.name: self.final_configs(s) for s in self.systems}
        for s in list(self.systems):
            if not self.swept(s):  # not warmed up yet
                for cfg in finals[s.name]:
                    self.warm(s, cfg)
        n_time = min(self.shape.time_texts, self.shape.texts)
        # When the timed runs cover the whole mix, the last one gives the fidelity rows.
        reuse = n_time == self.shape.texts
        for r in range(self.settings.repeats):
            last = r == self.settings.repeats - 1
            for s in list(self.systems):
                for cfg in finals[s.name]:
                    keep = self.shape.fidelity and reuse and last and cfg == s.common
                    self._timed(s, "final", cfg, n_time, keep)
        log(f"  final runs done in {time.perf_counter() - t0:.0f}s")
        if self.shape.fidelity and not reuse:
            t0 = time.perf_counter()
            for s in list(self.systems):
                self._timed(s, "fidelity", s.common, self.shape.texts, keep=True)
            log(f"  fidelity runs done in {time.perf_counter() - t0:.0f}s")
        if self.shape.latency_texts:
            t0 = time.perf_counter()
            self.latency()
            log(f"  latency done in {time.perf_counter() - t0:.0f}s")

    @staticmethod
    def swept(system: System) -> bool:
        """Whether a system has more candidates than the final runs take anyway."""
        return len([c for c in system.configs if c != system.common]) > 1

    def final_configs(self, system: System) -> list[Config]:
        """The best sweep setting and the common one (once if they are the same); every
        setting when there was nothing to sweep."""
        if not self.swept(system):
            return list(dict.fromkeys([*system.configs, system.common]))
        best = self.best_sweep(system)
        return list(dict.fromkeys([c for c in (best, system.common) if c is not None]))

    def best_sweep(self, system: System) -> Config | None:
        if not self.swept(system):
            return None
        timed = [(c, self.runs.get((system.name, "sweep", c.label))) for c in system.configs]
        scored = [(min(r.seconds for r in runs), c) for c, runs in timed if runs]
        return min(scored, key=lambda x: x[0])[1] if scored else None

    def latency(self) -> None:
        n = self.shape.texts
        idx = np.linspace(0, n - 1, min(self.shape.latency_texts, n)).astype(int).tolist()
        blocks = np.array_split(np.asarray(idx), max(1, self.settings.repeats))
        for s in list(self.systems):
            self._call(s, "latency warm-up", partial(s.latency, idx[:4]))
        for block in blocks:  # interleaved in blocks: A B C ... A B C ...
            for s in list(self.systems):
                t = self._call(s, "latency", partial(s.latency, block.tolist()))
                if t is not None:
                    self.latencies.setdefault(s.name, []).extend(t)

    # -- figures ------------------------------------------------------------------------

    def _figure(self, name: str, phase: str, cfg: Config, n: int) -> dict[str, Any] | None:
        """Figures of one system, phase and setting: from the median run, or in the sweep
        from the fastest (see ``run``)."""
        runs = self.runs.get((name, phase, cfg.label))
        if not runs:
            return None
        secs = [r.seconds for r in runs]
        med = min(secs) if phase == "sweep" else median(secs)
        toks = int(self.tokens[:n].sum())
        util = median([r.cpu_s / max(r.seconds * self.settings.threads, 1e-9) for r in runs])
        return {
            "config": cfg.label,
            "batch_size": cfg.batch_size,
            "max_batch_tokens": cfg.max_batch_tokens,
            "texts": n,
            "tokens": toks,
            "repeats": len(secs),
            "seconds": [round(x, 4) for x in secs],
            "median_s" if phase != "sweep" else "min_s": round(med, 4),
            "sentences_per_s": n / med,
            "tokens_per_s": toks / med,
            # Process CPU time / (wall x threads): well below 1 means it waited (on other
            # processes on the machine, or on Python between batches).
            "cpu_util": round(util, 3),
        }

    def figures(self, all_systems: list[System]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        sweep_n = min(self.shape.sweep_texts, self.shape.texts)
        for s in all_systems:
            entry: dict[str, Any] = {"label": s.label, "info": s.info, "status": "ok"}
            if s.name in self.failed:
                entry.update(self.failed[s.name])
            sweep = [self._figure(s.name, "sweep", c, sweep_n) for c in s.configs]
            entry["sweep"] = [f for f in sweep if f]
            best = self.best_sweep(s) if s.name not in self.failed else None
            n_time = min(self.shape.time_texts, self.shape.texts)
            entry["final"] = [
                f for c in s.configs + [s.common]
                if (f := self._figure(s.name, "final", c, n_time))
            ]  # fmt: skip
            fid_run = self._figure(s.name, "fidelity", s.common, self.shape.texts)
            if fid_run:
                entry["fidelity_run"] = fid_run  # one pass, for information only
            entry["final"] = list({f["config"]: f for f in entry["final"]}.values())
            finals = {f["config"]: f for f in entry["final"]}
            if finals:
                # The sweep (one short run each) picks the candidate; the final runs (median
                # of repeats on more texts) decide between it and batch 32.
                entry["best"] = max(finals.values(), key=lambda f: f["sentences_per_s"])
            if best is not None:
                entry["best_in_sweep"] = best.label
            if s.common.label in finals:
                entry["common"] = finals[s.common.label]
            if s.name in self.latencies:
                lat = self.latencies[s.name]
                entry["latency_batch1"] = {
                    **percentiles(lat),
                    "sentences_per_s": len(lat) / sum(lat),
                }
            out[s.name] = entry
        ref = out.get(REFERENCE, {})
        ref_emb = self.embeddings.get(REFERENCE)
        for name, entry in out.items():
            for key in ("best", "common"):
                if key in entry and key in ref:
                    entry[f"ratio_{key}_to_st_fp32"] = (
                        entry[key]["sentences_per_s"] / ref[key]["sentences_per_s"]
                    )
            if self.shape.fidelity and name in self.embeddings and ref_emb is not None:
                from bertrec.runtime.fidelity import fidelity

                entry["fidelity"] = {
                    **fidelity(self.embeddings[name], ref_emb),
                    "reference": f"{REFERENCE} (normalized), batch {self.settings.common_batch}",
                    "config": entry["common"]["config"] if "common" in entry else None,
                }
        for name, fail in self.failed.items():
            out.setdefault(name, {"label": name, "status": "failed", **fail})
        return out


def token_counts(texts: Sequence[str], tokenizer_json: Path, max_length: int) -> NDArray[np.int64]:
    """Tokens per text as every system sees them: with [CLS]/[SEP], truncated."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    tok.no_padding()
    tok.enable_truncation(max_length=max_length)
    return np.asarray([len(e.ids) for e in tok.encode_batch(list(texts))], dtype=np.int64)


def run_shape(shape: ShapeSettings, settings: Settings, mix: TextMix) -> dict[str, Any]:
    t0 = time.perf_counter()
    log(f"[{shape.name}] loading systems ...")
    source = minilm_source() if shape.name == "minilm" else bert_base_checkpoint()
    systems, failed, max_length = build_systems(shape, settings, source)
    tokens = token_counts(mix.texts[: shape.texts], source / "tokenizer.json", max_length)
    load_s = time.perf_counter() - t0
    log(
        f"[{shape.name}] {shape.texts} texts, mean {tokens.mean():.1f} tokens "
        f"(timed: first {shape.time_texts}, mean {tokens[: shape.time_texts].mean():.1f}); "
        "running ..."
    )
    bench = Bench(shape, settings, mix, tokens)
    bench.failed.update(failed)
    t1 = time.perf_counter()
    bench.run(systems)
    run_s = time.perf_counter() - t1
    figures = bench.figures(systems)
    for s in systems:
        s.close()
    return {
        "settings": asdict(shape),
        "source": str(source),
        "max_length": max_length,
        "mean_tokens": float(tokens.mean()),
        "mean_tokens_timed": float(tokens[: shape.time_texts].mean()),
        "mean_tokens_sweep": float(tokens[: shape.sweep_texts].mean()),
        "max_tokens": int(tokens.max()),
        "reference": REFERENCE,
        "systems": figures,
        "load_s": round(load_s, 1),
        "run_s": round(run_s, 1),
    }


def table(shape_name: str, rec: dict[str, Any]) -> str:
    head = (
        f"{'system':38s} {'best':>12s} {'sent/s':>7s} {'tok/s':>7s} {'x ST':>5s} "
        f"{'bs32/s':>7s} {'x ST':>5s} {'p50ms':>6s} {'p99ms':>6s} "
        f"{'mean cos':>8s} {'p1 cos':>7s} {'min cos':>7s}"
    )
    lines = [
        f"== {shape_name}: timed on {rec['settings']['time_texts']} texts (mean "
        f"{rec['mean_tokens_timed']:.1f} tokens)"
        + (
            f", fidelity on {rec['settings']['texts']} (mean {rec['mean_tokens']:.1f})"
            if rec["settings"]["fidelity"]
            else ""
        )
        + f"; max_length {rec['max_length']} ==",
        head,
        "-" * len(head),
    ]

    def num(x: Any, fmt: str, width: int) -> str:
        return format(x, fmt).rjust(width) if isinstance(x, (int, float)) else "-".rjust(width)

    for name, e in rec["systems"].items():
        if e.get("status") != "ok" and "best" not in e:
            lines.append(f"{name:38s} FAILED ({e.get('stage')}): {e.get('error', '')[:110]}")
            continue
        best, common = e.get("best", {}), e.get("common", {})
        lat, fid = e.get("latency_batch1", {}), e.get("fidelity", {})
        lines.append(
            f"{e['label'][:38]:38s} {best.get('config', '-'):>12s} "
            f"{num(best.get('sentences_per_s'), '.0f', 7)} "
            f"{num(best.get('tokens_per_s'), '.0f', 7)} "
            f"{num(e.get('ratio_best_to_st_fp32'), '.2f', 5)} "
            f"{num(common.get('sentences_per_s'), '.0f', 7)} "
            f"{num(e.get('ratio_common_to_st_fp32'), '.2f', 5)} "
            f"{num(lat.get('p50_ms'), '.1f', 6)} {num(lat.get('p99_ms'), '.1f', 6)} "
            f"{num(fid.get('mean_cos'), '.5f', 8)} {num(fid.get('p1_cos'), '.4f', 7)} "
            f"{num(fid.get('min_cos'), '.4f', 7)}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="CI smoke: few texts, MiniLM only")
    p.add_argument("--model", choices=("minilm", "bert-base", "both"), default="both")
    p.add_argument("--threads", type=int, default=usable_cores(), help="every system's threads")
    p.add_argument("--no-peer-venv", action="store_true", help="do not build the peer venv")
    p.add_argument("--out", type=Path, default=None, help="results dir (default bench/results)")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    warnings.filterwarnings("ignore")
    import torch

    torch.set_num_threads(args.threads)
    with contextlib.suppress(RuntimeError):  # only settable before torch's first op
        torch.set_num_interop_threads(1)
    settings = (
        quick_settings(args.threads)
        if args.quick
        else full_settings(args.model, args.threads, not args.no_peer_venv)
    )
    start = time.perf_counter()
    machine = machine_info()
    mix = load_text_mix(max(s.texts for s in settings.shapes), settings.seed)
    threads = {
        "torch_intra_op": torch.get_num_threads(),
        "torch_inter_op": torch.get_num_interop_threads(),
        "onnxruntime_intra_op": args.threads,
        "openvino_inference_num_threads": args.threads,
        "cores_usable": usable_cores(),
    }
    log(f"machine: {machine_line(machine)}")
    log(f"threads: {threads}")
    shapes = {}
    for shape in settings.shapes:
        shapes[shape.name] = run_shape(shape, settings, mix)
    load_end = os.getloadavg() if hasattr(os, "getloadavg") else None
    record = {
        "machine": machine,
        "loadavg_at_end": [round(x, 2) for x in load_end] if load_end else None,
        "versions": versions(),
        "threads": threads,
        "settings": asdict(settings),
        "text_mix": mix.describe(),
        "shapes": shapes,
        "elapsed_s": round(time.perf_counter() - start, 1),
        "command": " ".join(["python -m bench.throughput", *(argv or sys.argv[1:])]),
    }
    path = write_record("throughput", record, results_dir=args.out, quick=settings.quick)
    print(f"machine: {machine_line(machine)}")
    print(
        f"threads: {threads['torch_intra_op']} for every system (torch = ORT intra-op = OpenVINO)"
    )
    for name, rec in shapes.items():
        print()
        print(table(name, rec))
    print()
    means = ", ".join(f"{n} {r['mean_tokens']:.1f}" for n, r in shapes.items())
    print(f"mean tokens per text: {means}")
    print(f"elapsed: {record['elapsed_s']:.0f}s; record: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
