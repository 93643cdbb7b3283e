"""Reading a checkpoint: where its Hugging Face files are and what pooling it expects."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bertrec.errors import (
    ConfigError,
    FileFormatError,
    NotFoundError,
)

from .architectures import ARCHITECTURES, supported_architectures

# Module types are matched on the class name: sentence-transformers moved them between
# packages over versions (sentence_transformers.models.X, ...base.modules.x.X).
_ST_POOLING = "Pooling"
_ST_NORMALIZE = "Normalize"
_ST_TRANSFORMER = "Transformer"


@dataclass(frozen=True)
class SourceInfo:
    """A resolved checkpoint: where the HF files are and what the source asks for."""

    source: str
    hf_dir: Path
    model_type: str
    config: dict[str, Any]
    # From a sentence-transformers directory; None when the source does not say.
    pooling: str | None
    normalize: bool | None
    max_length: int | None
    # Why the source's own pooling cannot be used (raised unless pooling is given).
    pooling_error: str | None = None
    # sentence-transformers prompts (config_sentence_transformers.json): name -> text.
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None

    @property
    def position_limit(self) -> int:
        spec = ARCHITECTURES[self.model_type]
        return int(self.config.get("max_position_embeddings", 512)) - spec.position_offset


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FileFormatError(
            f"cannot read {str(path)!r} ({exc}); the checkpoint is corrupted: re-download it"
        ) from exc


def _st_pooling(cfg: dict[str, Any], path: Path) -> str:
    """The one pooling mode a sentence-transformers Pooling config asks for.

    Raises:
        ConfigError: a mode bertrec cannot put in the graph, or several.
    """
    mode = cfg.get("pooling_mode")  # newer sentence-transformers: one string
    if isinstance(mode, str):
        mode = {"mean_tokens": "mean", "cls_token": "cls", "max_tokens": "max"}.get(mode, mode)
        if mode in ("mean", "cls", "max"):
            return mode
        raise ConfigError(
            f"{str(path)!r} asks for pooling {mode!r}; bertrec supports mean, cls, max. "
            "Pass --pooling to choose one explicitly"
        )
    modes = {
        "cls": cfg.get("pooling_mode_cls_token", False),
        "mean": cfg.get("pooling_mode_mean_tokens", False),
        "max": cfg.get("pooling_mode_max_tokens", False),
    }
    other = [
        k
        for k in (
            "pooling_mode_mean_sqrt_len_tokens",
            "pooling_mode_weightedmean_tokens",
            "pooling_mode_lasttoken",
        )
        if cfg.get(k)
    ]
    chosen = [k for k, v in modes.items() if v]
    if other or len(chosen) != 1:
        raise ConfigError(
            f"{str(path)!r} asks for pooling {chosen + other}; bertrec supports exactly one of "
            "mean, cls, max. Pass --pooling to choose one explicitly"
        )
    return chosen[0]


def _max_seq_length(hf_dir: Path) -> int | None:
    """sentence-transformers' max_seq_length, else the tokenizer's model_max_length."""
    st_cfg = hf_dir / "sentence_bert_config.json"
    if st_cfg.is_file():
        value = _read_json(st_cfg).get("max_seq_length")
        if value:
            return int(value)
    tok_cfg = hf_dir / "tokenizer_config.json"
    if tok_cfg.is_file():
        value = _read_json(tok_cfg).get("model_max_length")
        # Tokenizers without a limit store a huge sentinel (1e30); ignore it.
        if isinstance(value, (int, float)) and 0 < value < 100_000:
            return int(value)
    return None


def _resolve_local(
    root: Path,
) -> tuple[Path, str | None, bool | None, int | None, str | None]:
    """HF directory plus pooling / normalize / max length read from sentence-transformers files."""
    modules_file = root / "modules.json"
    if not modules_file.is_file():
        return root, None, None, _max_seq_length(root), None
    modules = _read_json(modules_file)
    if not isinstance(modules, list):
        raise FileFormatError(f"{str(modules_file)!r} is not a list of modules")
    hf_dir, pooling, normalize = root, None, False
    pooling_error: str | None = None
    for m in modules:
        kind = str(m.get("type", "")).rsplit(".", 1)[-1] if isinstance(m, dict) else ""
        sub = root / str(m.get("path", "")) if isinstance(m, dict) else root
        if kind == _ST_TRANSFORMER:
            hf_dir = sub
        elif kind == _ST_POOLING:
            try:
                pooling = _st_pooling(_read_json(sub / "config.json"), sub)
            except ConfigError as exc:
                pooling_error = str(exc)  # fatal only if the caller does not pick a pooling
        elif kind == _ST_NORMALIZE:
            normalize = True
        else:
            raise ConfigError(
                f"sentence-transformers module {kind!r} in {str(modules_file)!r} is not supported "
                "(bertrec exports Transformer + Pooling + optional Normalize)"
            )
    return hf_dir, pooling, normalize, _max_seq_length(hf_dir), pooling_error


def resolve_source(source: str | os.PathLike[str]) -> SourceInfo:
    """Find a checkpoint's files and check its architecture is in the BERT family.

    Args:
        source: a local Hugging Face or sentence-transformers directory, or a Hub id
            (downloaded only when the network and ``HF_HUB_OFFLINE`` allow).

    Raises:
        NotFoundError: the directory does not exist (and it is not a reachable Hub id).
        FileFormatError: ``config.json`` is unreadable.
        ConfigError: the architecture is outside the supported family.
    """
    if not isinstance(source, (str, os.PathLike)) or not str(source):
        raise NotFoundError(f"source must be a non-empty path or Hub id, got {source!r}")
    root = Path(source).expanduser()
    if not root.exists():
        root = _download(str(source))
    if not root.is_dir():
        raise NotFoundError(f"source {str(source)!r} is not a directory")
    hf_dir, pooling, normalize, max_length, pooling_error = _resolve_local(root)
    config_path = hf_dir / "config.json"
    if not config_path.is_file():
        raise NotFoundError(
            f"{str(hf_dir)!r} has no config.json: it is not a Hugging Face checkpoint directory"
        )
    config = _read_json(config_path)
    model_type = str(config.get("model_type", ""))
    if model_type not in ARCHITECTURES:
        raise ConfigError(
            f"architecture {model_type!r} of {str(source)!r} is not supported; bertrec exports "
            f"the BERT family: {', '.join(supported_architectures())}"
        )
    prompts, default_prompt = _st_prompts(root / "config_sentence_transformers.json")
    return SourceInfo(
        str(source),
        hf_dir,
        model_type,
        config,
        pooling,
        normalize,
        max_length,
        pooling_error,
        prompts,
        default_prompt,
    )


def _st_prompts(path: Path) -> tuple[dict[str, str], str | None]:
    """The prompts a sentence-transformers checkpoint defines, and its default prompt name.

    Raises:
        FileFormatError: the file is not JSON, or its prompts are not strings by name.
    """
    if not path.is_file():
        return {}, None
    cfg = _read_json(path)
    prompts = cfg.get("prompts") if isinstance(cfg, dict) else None
    default = cfg.get("default_prompt_name") if isinstance(cfg, dict) else None
    if prompts is None:
        prompts = {}
    if not isinstance(prompts, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in prompts.items()
    ):
        raise FileFormatError(f"{str(path)!r} has prompts that are not name -> text strings")
    if default is not None and default not in prompts:
        raise FileFormatError(
            f"{str(path)!r} names default_prompt_name {default!r}, which is not among its "
            f"prompts {sorted(prompts)}"
        )
    return dict(prompts), default


def _download(repo_id: str) -> Path:
    looks_like_hub_id = repo_id.count("/") == 1 and not repo_id.startswith((".", "/", "~"))
    if not looks_like_hub_id:
        raise NotFoundError(f"source {repo_id!r} does not exist; pass a checkpoint directory")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id))
    except Exception as exc:  # offline, unknown repo, auth: all mean "not available here"
        raise NotFoundError(
            f"source {repo_id!r} is not a local directory and could not be fetched from the Hub "
            f"({type(exc).__name__}: {exc}); download it first and pass the directory"
        ) from exc
