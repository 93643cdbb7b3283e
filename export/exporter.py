"""``export_model``: a BERT-family checkpoint to a validated ONNX model directory.

Pooling and L2 normalization are traced into the graph, so the runtime moves only a
[batch, dim] vector off the device. We use ``torch.onnx`` (the TorchScript exporter)
on a small wrapper module rather than Optimum's exporter: Optimum exports token-level
hidden states only, and appending pooling afterwards would be graph surgery, while the
wrapper puts pooling in the same trace with no extra code to maintain.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bertrec.core import (
    output_error,
    remove_stale_temps,
    replace_dir,
    sha256_file,
    temp_dir_beside,
)
from bertrec.errors import (
    BertrecError,
    ConfigError,
    FileFormatError,
    OutputError,
    ValidationFailedError,
)
from bertrec.runtime.fidelity import fidelity
from bertrec.runtime.manifest import (
    OUTPUT_NAME,
    POOLINGS,
    PRECISIONS,
    Manifest,
    Variant,
    model_filename,
    write_manifest,
)
from bertrec.runtime.texts import default_sentences

from .architectures import ARCHITECTURES
from .sources import SourceInfo, resolve_source

log = logging.getLogger("bertrec.export")

FP32_MIN_COS = 0.99999
DEFAULT_OPSET = 17


def parse_precisions(precision: str | Sequence[str]) -> tuple[str, ...]:
    """``"fp32,int8"`` or ``("fp32", "int8")`` to a checked tuple that always starts with fp32."""
    items = precision.split(",") if isinstance(precision, str) else list(precision)
    names = [str(p).strip().lower() for p in items if str(p).strip()]
    bad = [p for p in names if p not in PRECISIONS]
    if bad or not names:
        raise ConfigError(
            f"unknown precision {bad or precision!r}; choose from {', '.join(PRECISIONS)}"
        )
    # fp32 is the reference every other variant is derived from and validated against.
    return tuple(dict.fromkeys(["fp32", *names]))


def export_model(
    source: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    precision: str | Sequence[str] = ("fp32", "int8"),
    pooling: str | None = None,
    normalize: bool | None = None,
    max_length: int | None = None,
    opset: int = DEFAULT_OPSET,
    overwrite: bool = False,
    progress: bool = False,
    validation_texts: Sequence[str] | None = None,
    calibration_texts: Sequence[str] | None = None,
) -> Path:
    """Export a checkpoint to a model directory, validated against PyTorch.

    Args:
        source: local Hugging Face / sentence-transformers directory, or a Hub id.
        output_dir: directory to create (atomically; never half-written).
        precision: variants to write; fp32 is always included.
        pooling: ``mean``, ``cls`` or ``max``; default from the sentence-transformers
            config, else ``mean``.
        normalize: L2-normalize in the graph; default from the sentence-transformers
            config, else True (cosine ranking is what bertrec is for).
        max_length: token limit; default from the source, capped at the position limit.
            At least the tokenizer's special tokens plus one (3 for BERT's [CLS] x [SEP]).
        opset: ONNX opset.
        overwrite: replace an existing ``output_dir``.
        progress: show a progress bar over the export steps.
        validation_texts: sentences to validate with (default: the packaged set).
        calibration_texts: sentences for the int8 accuracy gate (default: packaged set).

    Returns:
        The path of the model directory.

    Raises:
        NotFoundError, ConfigError, FileFormatError: bad source.
        ConfigError: bad precision, pooling or opset; max_length outside the range the
            tokenizer and the position limit allow (the message names it).
        OutputError: ``output_dir`` exists and ``overwrite`` is False.
        OutputError: the output location cannot be written (permissions, a full disk);
            nothing is left behind and an existing ``output_dir`` is untouched.
        ValidationFailedError: the fp32 export does not match PyTorch closely enough.
    """
    precisions = parse_precisions(precision)
    if pooling is not None and pooling not in POOLINGS:
        raise ConfigError(f"unknown pooling {pooling!r}; choose from {', '.join(POOLINGS)}")
    if isinstance(opset, bool) or not isinstance(opset, int) or not 14 <= opset <= 21:
        raise ConfigError(f"opset must be an int from 14 to 21, got {opset!r}")
    info = resolve_source(source)
    if pooling is None and info.pooling_error:
        raise ConfigError(info.pooling_error)
    out = Path(output_dir).expanduser().absolute()
    tokenizer = _load_tokenizer(info)
    max_length = _check_max_length(max_length, info, tokenizer)
    # Leftovers of exports of this output that were killed go first, written or not.
    remove_stale_temps(out)
    if out.exists() and not overwrite:
        raise OutputError(
            f"output directory {str(out)!r} already exists; pass --overwrite (overwrite=True) "
            "to replace it, or choose another path"
        )
    tmp = temp_dir_beside(out)

    try:
        _build(
            info,
            tokenizer,
            tmp,
            precisions=precisions,
            pooling=pooling or info.pooling or "mean",
            normalize=_pick(normalize, info.normalize, True),
            max_length=max_length,
            opset=opset,
            progress=progress,
            validation_texts=validation_texts,
            calibration_texts=calibration_texts,
        )
        replace_dir(tmp, out)
    except BertrecError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except OSError as exc:
        # Every file of the export is written into tmp, beside out: a full disk or a
        # permission fault there is a fault of the output location.
        shutil.rmtree(tmp, ignore_errors=True)
        raise output_error(out, exc) from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _pick(explicit: bool | None, from_source: bool | None, default: bool) -> bool:
    """The caller's choice, else what the source says, else the default."""
    if explicit is not None:
        return bool(explicit)
    return default if from_source is None else from_source


def _check_max_length(max_length: object, info: SourceInfo, tokenizer: Any) -> int:
    """The token limit to export with: the caller's, else the source's, capped at the
    position limit; it must leave room for one token besides the tokenizer's specials.

    Raises:
        ConfigError: naming the allowed range.
    """
    limit = info.position_limit
    # [CLS] x [SEP] for BERT: a shorter limit makes every text its special tokens only.
    least = int(tokenizer.num_special_tokens_to_add()) + 1
    allowed = f"pass --max-length from {least} to {limit}"
    if max_length is None:
        chosen = min(info.max_length or limit, limit)
        if chosen < least:
            raise ConfigError(
                f"{info.source!r} sets a max length of {chosen} tokens, less than the {least} "
                f"its tokenizer needs (its special tokens and one word); {allowed}"
            )
        return chosen
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length <= 0:
        raise ConfigError(f"max_length must be a positive int, got {max_length!r}; {allowed}")
    if max_length > limit:
        raise ConfigError(
            f"max_length {max_length} exceeds the model's position limit {limit}; {allowed}"
        )
    if max_length < least:
        raise ConfigError(
            f"max_length {max_length} leaves no room for text: the tokenizer adds "
            f"{least - 1} special tokens to every text; {allowed}"
        )
    return max_length


def _load_failure(info: SourceInfo, exc: Exception) -> FileFormatError:
    return FileFormatError(
        f"cannot load the checkpoint in {str(info.hf_dir)!r} ({type(exc).__name__}: "
        f"{str(exc)[:300]}); the weights or tokenizer files are corrupted or incomplete: "
        "re-download the model"
    )


def _load_tokenizer(info: SourceInfo) -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(info.hf_dir), use_fast=True)
    except Exception as exc:  # transformers raises many types for bad files
        raise _load_failure(info, exc) from exc
    if not getattr(tokenizer, "is_fast", False):
        raise FileFormatError(
            f"{str(info.hf_dir)!r} has no fast (Rust) tokenizer; bertrec needs tokenizer.json"
        )
    return tokenizer


def _load_model(info: SourceInfo) -> Any:
    import torch
    from transformers import AutoModel

    try:
        # Eager attention traces to the MatMul/Softmax pattern ORT's fusions recognise.
        model = AutoModel.from_pretrained(
            str(info.hf_dir), attn_implementation="eager", dtype=torch.float32
        )
    except Exception as exc:  # transformers raises many types for bad files
        raise _load_failure(info, exc) from exc
    model.eval()
    return model


def _save_tokenizer(tokenizer: Any, folder: Path) -> None:
    """The tokenizer's files into ``folder``.

    Raises:
        OSError: also for the Rust tokenizer's own write errors, which arrive as a bare
            ``Exception("... (os error 28)")``.
    """
    try:
        tokenizer.save_pretrained(str(folder))
    except OSError:
        raise
    except Exception as exc:
        found = re.search(r"\(os error (\d+)\)", str(exc))
        if found is None:
            raise
        code = int(found.group(1))
        raise OSError(code, os.strerror(code), str(folder / "tokenizer.json")) from exc


def _pooled_module(model: Any, pooling: str, normalize: bool, with_types: bool) -> Any:
    import torch

    class PooledEncoder(torch.nn.Module):
        """The checkpoint plus sentence-transformers pooling, as one traceable module."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def _pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            if pooling == "cls":
                pooled = hidden[:, 0]
            elif pooling == "max":
                pooled = hidden.masked_fill(mask == 0, -1e9).max(dim=1).values
            else:
                pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            if normalize:
                pooled = torch.nn.functional.normalize(pooled, p=2.0, dim=1)
            return pooled

        def forward(
            self,
            input_ids: torch.Tensor,
            attention_mask: torch.Tensor,
            token_type_ids: torch.Tensor | None = None,
        ) -> torch.Tensor:
            kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
            if with_types:
                kwargs["token_type_ids"] = token_type_ids
            hidden = self.model(**kwargs)[0]
            return self._pool(hidden, attention_mask)

    return PooledEncoder().eval()


def _torch_reference(
    module: Any, tokenizer: Any, texts: Sequence[str], max_length: int, with_types: bool
) -> NDArray[np.float32]:
    import torch

    rows = []
    with torch.inference_mode():
        for i in range(0, len(texts), 32):
            batch = tokenizer(
                list(texts[i : i + 32]),
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
            args = [batch["input_ids"], batch["attention_mask"]]
            if with_types:
                args.append(batch.get("token_type_ids", torch.zeros_like(batch["input_ids"])))
            rows.append(module(*args).float().numpy())
    return np.concatenate(rows).astype(np.float32)


def _build(
    info: SourceInfo,
    tokenizer: Any,
    tmp: Path,
    *,
    precisions: tuple[str, ...],
    pooling: str,
    normalize: bool,
    max_length: int,
    opset: int,
    progress: bool,
    validation_texts: Sequence[str] | None,
    calibration_texts: Sequence[str] | None,
) -> None:
    import onnx
    import onnxruntime
    import torch
    import transformers
    from tqdm.auto import tqdm

    import bertrec

    spec = ARCHITECTURES[info.model_type]
    with_types = "token_type_ids" in spec.input_names
    steps = ["load", "trace", "validate", *[p for p in precisions if p != "fp32"], "write"]
    bar = tqdm(total=len(steps), desc="export", disable=not progress, unit="step")

    def step(name: str) -> None:
        bar.set_postfix_str(name)
        log.info("export step: %s", name)

    step("load")
    model = _load_model(info)
    module = _pooled_module(model, pooling, normalize, with_types)
    _save_tokenizer(tokenizer, tmp)
    for extra in ("vocab.txt", "merges.txt", "vocab.json", "sentencepiece.bpe.model"):
        (tmp / extra).unlink(missing_ok=True)  # tokenizer.json carries everything the runtime reads
    bar.update()

    step("trace")
    dummy = tokenizer(
        ["a short one", "a somewhat longer sentence to give the trace two lengths"],
        padding=True,
        return_tensors="pt",
    )
    args: list[Any] = [dummy["input_ids"], dummy["attention_mask"]]
    if with_types:
        args.append(torch.zeros_like(dummy["input_ids"]))
    axes = {name: {0: "batch", 1: "sequence"} for name in spec.input_names}
    fp32_path = tmp / model_filename("fp32")
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            tuple(args),
            str(fp32_path),
            input_names=list(spec.input_names),
            output_names=[OUTPUT_NAME],
            dynamic_axes={**axes, OUTPUT_NAME: {0: "batch"}},
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    bar.update()

    step("validate")
    texts = list(validation_texts) if validation_texts is not None else default_sentences()
    reference = _torch_reference(module, tokenizer, texts, max_length, with_types)
    dim = int(reference.shape[1])
    _fix_output_shape(fp32_path, dim)
    manifest = Manifest(
        source=info.source,
        architecture=str((info.config.get("architectures") or [model.__class__.__name__])[0]),
        model_type=info.model_type,
        dim=dim,
        pooling=pooling,
        normalize=bool(normalize),
        max_length=int(max_length),
        input_names=spec.input_names,
        pad_token_id=int(tokenizer.pad_token_id or 0),
        opset=opset,
        variants={},
        position_limit=info.position_limit,
        prompts=info.prompts,
        default_prompt_name=info.default_prompt_name,
        versions={
            "bertrec": bertrec.__version__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
        },
    )
    fp32 = Variant(
        precision="fp32",
        file=fp32_path.name,
        sha256=sha256_file(fp32_path),
        size_bytes=fp32_path.stat().st_size,
    )
    write_manifest(tmp, manifest.with_variant(fp32))
    figures = validate_variant(tmp, "fp32", texts, reference)
    if figures["min_cos"] < FP32_MIN_COS:
        raise ValidationFailedError(
            f"fp32 export does not reproduce PyTorch: min cosine {figures['min_cos']:.7f} < "
            f"{FP32_MIN_COS} (max abs diff {figures['max_abs_diff']:.2e}) over {len(texts)} "
            "sentences; nothing was written"
        )
    log.info("fp32 validation: %s", figures)
    manifest = manifest.with_variant(
        Variant(**{**fp32.to_dict(), "validation": {**figures, "reference": "pytorch fp32"}})
    )
    write_manifest(tmp, manifest)
    bar.update()

    for p in precisions:
        if p == "fp32":
            continue
        step(p)
        from bertrec.quantize import add_variant

        add_variant(
            tmp, p, calibration_texts=calibration_texts, reference_texts=texts, reference=reference
        )
        bar.update()
    step("write")
    from bertrec.quantize.checks import bf16_available, check_model

    if bf16_available():
        # Recorded now so that Encoder(model_dir) on such a CPU may pick bf16 without
        # ever writing the directory itself.
        check_model(tmp)
    bar.update()
    bar.close()


def _fix_output_shape(path: Path, dim: int) -> None:
    """Declare the output as [batch, dim]: the tracer leaves dim symbolic after pooling."""
    import onnx

    model = onnx.load(str(path))
    (out,) = model.graph.output
    out.type.tensor_type.shape.dim[1].Clear()
    out.type.tensor_type.shape.dim[1].dim_value = dim
    onnx.save(model, str(path))


def validate_variant(
    model_dir: Path,
    precision: str,
    texts: Iterable[str],
    reference: NDArray[np.float32],
) -> dict[str, float]:
    """Encode ``texts`` with the real Encoder (CPU) and compare to ``reference``."""
    from bertrec.runtime.encoder import Encoder

    enc = Encoder(model_dir, precision=precision, device="cpu")
    got = enc.encode(list(texts))
    return fidelity(got, reference)
