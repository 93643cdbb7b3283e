"""The error hierarchy: every error bertrec raises on purpose is a ``BertrecError``.

Each class also subclasses the built-in a caller would naturally catch
(``ValueError``, ``TypeError``, ``FileNotFoundError`` ...), so existing
``except ValueError`` code keeps working.
"""

from __future__ import annotations


class BertrecError(Exception):
    """Root of every error raised on purpose by bertrec."""


class ConfigError(BertrecError, ValueError):
    """An argument has a value bertrec cannot use (unknown precision, k <= 0, ...)."""


class InputTypeError(BertrecError, TypeError):
    """An input has the wrong type (None, bytes, a non-string text, ...)."""


class InputValueError(BertrecError, ValueError):
    """An input has the right type but unusable content (NaN vectors, invalid Unicode, ...)."""


class ModelNotFoundError(BertrecError, FileNotFoundError):
    """A model source or model directory (or a file inside it) does not exist."""


class ManifestError(BertrecError, ValueError):
    """``manifest.json`` is missing a field, has a wrong type or an unknown schema version."""


class IntegrityError(BertrecError, ValueError):
    """A file does not match the sha256 recorded for it (tampered, truncated, replaced)."""


class UnsupportedModelError(BertrecError, ValueError):
    """The checkpoint's architecture is outside the supported BERT family."""


class OutputExistsError(BertrecError, FileExistsError):
    """The output directory exists and ``overwrite`` was not asked for."""


class ValidationFailedError(BertrecError, ValueError):
    """An exported or quantized model does not reproduce its reference closely enough."""


class ProviderError(BertrecError, RuntimeError):
    """The requested execution provider / backend is not available on this machine."""


class CheckpointError(BertrecError, ValueError):
    """The checkpoint exists but cannot be read (corrupted or truncated weights, bad JSON)."""


class OutputNotWritableError(BertrecError, PermissionError):
    """The output location cannot be written (no permission, parent is a file, disk full)."""


class ModelMismatchError(BertrecError, ValueError):
    """Saved vectors were made by another model than the encoder they are loaded with."""
