"""What each supported BERT-family architecture needs at export time, declared in one table.

Keys are Hugging Face ``config.model_type`` values. ``position_offset`` is the number
of position slots the architecture reserves (RoBERTa-style models start positions at
``padding_idx + 1``), so the usable max length is ``max_position_embeddings - offset``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ArchSpec:
    """Export facts for one architecture."""

    input_names: tuple[str, ...]
    position_offset: int = 0


_WITH_TYPES = ("input_ids", "attention_mask", "token_type_ids")
_NO_TYPES = ("input_ids", "attention_mask")

ARCHITECTURES: dict[str, ArchSpec] = {
    "bert": ArchSpec(_WITH_TYPES),
    "electra": ArchSpec(_WITH_TYPES),
    "distilbert": ArchSpec(_NO_TYPES),
    # RoBERTa and XLM-R have a single token type; their tokenizers never emit the input.
    "roberta": ArchSpec(_NO_TYPES, position_offset=2),
    "xlm-roberta": ArchSpec(_NO_TYPES, position_offset=2),
    "mpnet": ArchSpec(_NO_TYPES, position_offset=2),
}


def supported_architectures() -> tuple[str, ...]:
    """The ``model_type`` names bertrec can export, sorted."""
    return tuple(sorted(ARCHITECTURES))
