"""The error hierarchy: every error bertrec raises on purpose is a ``BertrecError``.

Each class also subclasses the built-in a caller would naturally catch (``ValueError``,
``TypeError``, ``FileNotFoundError``, ``OSError`` ...), so ``except ValueError`` code
keeps working. Messages name the value that was wrong and what to do about it.
"""

from __future__ import annotations


class BertrecError(Exception):
    """Root of every error raised on purpose by bertrec."""


class ConfigError(BertrecError, ValueError):
    """An argument or setting has a value bertrec cannot use (unknown precision, k <= 0,
    an architecture outside the BERT family, ...)."""


class InputTypeError(BertrecError, TypeError):
    """An input has the wrong type (None, bytes, a non-string text, a dict of texts ...)."""


class InputValueError(BertrecError, ValueError):
    """An input has the right type but unusable content (NaN vectors, invalid Unicode,
    unknown item ids ...)."""


class NotFoundError(BertrecError, FileNotFoundError):
    """A file or directory that should exist does not (model directory, input file, store)."""


class FileFormatError(BertrecError, ValueError):
    """A file exists but cannot be used: malformed JSON, a missing field, an unknown schema
    version, a checksum that does not match, corrupted weights."""


class OutputError(BertrecError, OSError):
    """An output cannot be written: it exists (and overwrite was not asked for), its folder
    is not writable, the disk is full, or another process is writing it."""


class ModelMismatchError(BertrecError, ValueError):
    """Vectors, a store or a job were made by another model than the one given."""


class ValidationFailedError(BertrecError, ValueError):
    """An exported or quantized model does not reproduce its reference closely enough."""


class ProviderError(BertrecError, RuntimeError):
    """A backend, execution provider or optional dependency is not available here."""
