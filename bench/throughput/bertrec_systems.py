"""The bertrec systems: ``bertrec.Encoder`` on the bench's own export of each shape's
checkpoint, one per backend and precision, and ``Encoder(model_dir)`` as it chooses."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import bench_cache, exported_model_dir
from bench.throughput.base import Config, System, SystemFailed, error_text
from bertrec.errors import ValidationFailedError


def bertrec_model_dir(source: Path, shape: str) -> tuple[Path, str | None]:
    """The bertrec export (fp32 + int8) and, if int8 could not pass its gate, why.

    The int8 accuracy gate may refuse a random-weight model; then fp32 alone is exported
    and the refusal is remembered, so later runs do not pay for the attempt again.
    """
    refused = bench_cache(shape) / "bertrec.int8-refused"
    if refused.is_file():
        return exported_model_dir(source, shape, ("fp32",)), refused.read_text(encoding="utf-8")
    try:
        return exported_model_dir(source, shape, ("fp32", "int8")), None
    except ValidationFailedError as exc:
        refused.write_text(error_text(exc), encoding="utf-8")
        return exported_model_dir(source, shape, ("fp32",)), error_text(exc)


def int8_dir(model: tuple[Path, str | None]) -> Path:
    """The model directory of ``bertrec_model_dir`` for an int8 system, or why there is none."""
    path, refused = model
    if refused:
        raise SystemFailed(f"bertrec's int8 export was refused by its accuracy gate: {refused}")
    return path


def bertrec_system(
    name: str, model_dir: Path, budgets: Sequence[int], common_batch: int, **kwargs: Any
) -> System:
    """``bertrec.Encoder(model_dir, **kwargs)``, swept over token ``budgets``; ``name``
    ``bertrec-auto`` is the encoder with no arguments, run at its own default only."""
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
        "variant": enc.variant,
        "backend_reason": enc.backend_reason,
        "providers": enc.providers,
        "threads": enc.threads,
        "default_max_batch_tokens": default_budget,
        "max_length": enc.max_length,
        "constructor": dict(kwargs),
        "startup": {k: round(v, 4) if isinstance(v, float) else v for k, v in enc.startup.items()},
    }
    label = f"bertrec {enc.backend} {enc.precision}" + (" (auto)" if name == "bertrec-auto" else "")
    system = System(name, label, info, configs, common, fn)
    system.batching = "budget"
    return system
