"""The model-directory format: ``manifest.json`` plus one ``model.<precision>.onnx`` per variant.

runtime/ owns this format; export/ and quantize/ write it, the Encoder reads it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from bertrec.core import atomic_write_json, sha256_file
from bertrec.errors import FileFormatError, NotFoundError

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
TOKENIZER_NAME = "tokenizer.json"
OUTPUT_NAME = "sentence_embedding"
PRECISIONS = ("fp32", "int8", "fp16")
POOLINGS = ("mean", "cls", "max")


def is_plain_file_name(name: str) -> bool:
    """A bare file name: no folder part, not absolute, not "." or ".." (a manifest may name
    only files inside its own directory)."""
    return (
        bool(name)
        and name not in (".", "..")
        and "/" not in name
        and "\\" not in name
        and "\0" not in name
        and Path(name).name == name
    )


def model_filename(precision: str) -> str:
    """File name of a precision variant inside a model directory."""
    return f"model.{precision}.onnx"


@dataclass(frozen=True)
class Variant:
    """One ONNX file of a model directory and how faithful it is to its reference."""

    precision: str
    file: str
    sha256: str
    size_bytes: int
    # Fidelity figures (min/mean/p1 cosine, max abs diff, n sentences, reference name).
    validation: dict[str, Any] = field(default_factory=dict)
    # How the variant was made (quantization recipe, nodes left in fp32, ...).
    recipe: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Variant:
        try:
            variant = cls(
                precision=str(data["precision"]),
                file=str(data["file"]),
                sha256=str(data["sha256"]),
                size_bytes=int(data["size_bytes"]),
                validation=dict(data.get("validation", {})),
                recipe=dict(data.get("recipe", {})),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise FileFormatError(
                f"manifest variant entry is malformed ({exc!r}): {data!r}; re-export the model"
            ) from exc
        if not is_plain_file_name(variant.file):
            raise FileFormatError(
                f"manifest variant {variant.precision!r} names the file {variant.file!r}, which is "
                "not a plain file name inside the model directory; re-export the model"
            )
        return variant


@dataclass(frozen=True)
class Manifest:
    """Everything the runtime needs to know about a model directory."""

    source: str
    architecture: str
    model_type: str
    dim: int
    pooling: str
    normalize: bool
    max_length: int
    input_names: tuple[str, ...]
    pad_token_id: int
    opset: int
    variants: dict[str, Variant]
    output_name: str = OUTPUT_NAME
    versions: dict[str, str] = field(default_factory=dict)
    # Fidelity checks made when a backend first ran the model (e.g. OpenVINO bf16).
    runtime_checks: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The checkpoint's position limit (max_position_embeddings less reserved slots).
    position_limit: int | None = None
    # sentence-transformers prompts (config_sentence_transformers.json): name -> text.
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_names"] = list(self.input_names)
        d["variants"] = {k: v.to_dict() for k, v in self.variants.items()}
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        if not isinstance(data, dict):
            raise FileFormatError(f"manifest must be a JSON object, got {type(data).__name__}")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise FileFormatError(
                f"manifest schema_version {version!r} is not supported (this bertrec reads "
                f"{SCHEMA_VERSION}); re-export the model with this version of bertrec"
            )
        try:
            variants = {str(k): Variant.from_dict(v) for k, v in dict(data["variants"]).items()}
            m = cls(
                source=str(data["source"]),
                architecture=str(data["architecture"]),
                model_type=str(data["model_type"]),
                dim=int(data["dim"]),
                pooling=str(data["pooling"]),
                normalize=bool(data["normalize"]),
                max_length=int(data["max_length"]),
                input_names=tuple(str(n) for n in data["input_names"]),
                pad_token_id=int(data["pad_token_id"]),
                opset=int(data["opset"]),
                variants=variants,
                output_name=str(data.get("output_name", OUTPUT_NAME)),
                versions={str(k): str(v) for k, v in dict(data.get("versions", {})).items()},
                runtime_checks={
                    str(k): dict(v) for k, v in dict(data.get("runtime_checks", {})).items()
                },
                position_limit=(
                    None if data.get("position_limit") is None else int(data["position_limit"])
                ),
                prompts={str(k): str(v) for k, v in dict(data.get("prompts") or {}).items()},
                default_prompt_name=(
                    None
                    if data.get("default_prompt_name") is None
                    else str(data["default_prompt_name"])
                ),
                schema_version=SCHEMA_VERSION,
            )
        except KeyError as exc:
            raise FileFormatError(f"manifest is missing the field {exc.args[0]!r}") from exc
        except (TypeError, ValueError) as exc:
            raise FileFormatError(f"manifest has a field of the wrong type: {exc}") from exc
        if m.pooling not in POOLINGS:
            raise FileFormatError(f"manifest pooling {m.pooling!r} is not one of {POOLINGS}")
        if m.dim <= 0 or m.max_length <= 0:
            raise FileFormatError(f"manifest dim={m.dim} and max_length={m.max_length} must be > 0")
        if m.position_limit is not None and m.max_length > m.position_limit:
            raise FileFormatError(
                f"manifest max_length {m.max_length} exceeds the model's position limit "
                f"{m.position_limit}; re-export with --max-length {m.position_limit} or less"
            )
        if not m.variants:
            raise FileFormatError("manifest lists no variants; re-export the model")
        if m.default_prompt_name is not None and m.default_prompt_name not in m.prompts:
            raise FileFormatError(
                f"manifest default_prompt_name {m.default_prompt_name!r} is not one of its "
                f"prompts {sorted(m.prompts)}; re-export the model"
            )
        for key, v in m.variants.items():
            if key != v.precision or key not in PRECISIONS:
                raise FileFormatError(
                    f"manifest variant {key!r} (precision {v.precision!r}) is not one of "
                    f"{', '.join(PRECISIONS)} under its own name; re-export the model"
                )
        if m.pad_token_id < 0 or not {"input_ids", "attention_mask"} <= set(m.input_names):
            raise FileFormatError(
                f"manifest pad_token_id {m.pad_token_id} or input_names {m.input_names} are "
                "unusable (need input_ids and attention_mask); re-export the model"
            )
        return m

    def with_variant(self, variant: Variant) -> Manifest:
        """A copy with ``variant`` added (or replaced)."""
        return replace(self, variants={**self.variants, variant.precision: variant})

    @property
    def fingerprint(self) -> str:
        """Identifies the model's weights: the fp32 file's sha256 (or the first variant's)."""
        v = self.variants.get("fp32") or next(iter(self.variants.values()))
        return v.sha256


def read_manifest(model_dir: str | os.PathLike[str]) -> Manifest:
    """Read and check ``manifest.json`` of a model directory."""
    path = Path(model_dir) / MANIFEST_NAME
    if not Path(model_dir).is_dir():
        raise NotFoundError(
            f"model directory {str(model_dir)!r} does not exist; create one with "
            "`bertrec export SOURCE OUTPUT_DIR`"
        )
    if not path.is_file():
        raise NotFoundError(
            f"{str(model_dir)!r} has no {MANIFEST_NAME}: it is not a bertrec model directory; "
            "create one with `bertrec export SOURCE OUTPUT_DIR`"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FileFormatError(f"{path} is not valid JSON ({exc}); re-export the model") from exc
    except OSError as exc:
        raise FileFormatError(
            f"{path} cannot be read ({exc.strerror}); check its permissions"
        ) from exc
    try:
        return Manifest.from_dict(data)
    except FileFormatError as exc:
        raise FileFormatError(f"{path}: {exc}") from exc


def write_manifest(model_dir: str | os.PathLike[str], manifest: Manifest) -> Path:
    """Write ``manifest.json`` atomically (temporary file in the same folder, then rename)."""
    return atomic_write_json(Path(model_dir) / MANIFEST_NAME, manifest.to_dict())


def verify_variant(
    model_dir: str | os.PathLike[str], variant: Variant, check_hash: bool = True
) -> Path:
    """Path of a variant's ONNX file after checking it exists and matches its size and
    (unless ``check_hash`` is False) its sha256."""
    path = Path(model_dir) / variant.file
    if not path.is_file():
        raise NotFoundError(
            f"{variant.precision} variant file {str(path)!r} named in the manifest is missing; "
            "re-export the model or run `bertrec quantize`"
        )
    size = path.stat().st_size
    try:
        digest = sha256_file(path) if check_hash and size == variant.size_bytes else None
    except OSError as exc:
        raise FileFormatError(
            f"{str(path)!r} cannot be read ({exc.strerror}); check its permissions"
        ) from exc
    if size != variant.size_bytes or (digest is not None and digest != variant.sha256):
        raise FileFormatError(
            f"{str(path)!r} does not match its manifest entry (size {size} vs "
            f"{variant.size_bytes}, or sha256 differs): the file was modified or truncated; "
            "re-export the model"
        )
    return path


def check_against_model(
    manifest: Manifest,
    path: Path,
    inputs: Sequence[str],
    outputs: dict[str, Sequence[object]],
) -> None:
    """Check that the manifest describes the ONNX file a backend opened: its inputs, its
    output name and the output's width.

    Args:
        manifest: the model directory's manifest.
        path: the ONNX file (for the message).
        inputs: the graph's input names.
        outputs: the graph's outputs, name -> shape (dims may be symbolic strings or None).

    Raises:
        FileFormatError: the manifest and the graph disagree.
    """
    if set(inputs) != set(manifest.input_names):
        raise FileFormatError(
            f"{str(path)!r} takes inputs {sorted(inputs)}, the manifest says "
            f"{sorted(manifest.input_names)}; re-export the model"
        )
    if manifest.output_name not in outputs:
        raise FileFormatError(
            f"{str(path)!r} has no output {manifest.output_name!r} (it has {sorted(outputs)}); "
            "re-export the model"
        )
    shape = list(outputs[manifest.output_name])
    width = shape[-1] if shape else None
    if isinstance(width, int) and width > 0 and width != manifest.dim:
        raise FileFormatError(
            f"{str(path)!r} outputs vectors of {width} dimensions, the manifest says "
            f"{manifest.dim}; re-export the model"
        )
