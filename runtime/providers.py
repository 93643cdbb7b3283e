"""Which ONNX Runtime execution providers actually work here (listed is not the same as usable)."""

from __future__ import annotations

import contextlib
import importlib.util
import io
from functools import lru_cache
from types import ModuleType

from bertrec.errors import ProviderError

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"

# A serialized one-node ONNX model (Identity, opset 13): enough to start a provider.
_PROBE_MODEL = (
    b'\x08\x08:7\n\x10\n\x01x\x12\x01y"\x08Identity\x12\x01pZ\x0f\n\x01x\x12\n\n\x08\x08\x01'
    b"\x12\x04\n\x02\x08\x01b\x0f\n\x01y\x12\n\n\x08\x08\x01\x12\x04\n\x02\x08\x01B\x04\n\x00\x10\r"
)


def onnxruntime() -> ModuleType:
    """The ``onnxruntime`` module, imported on first use (``import bertrec`` stays light and
    works before an ONNX Runtime is chosen).

    Raises:
        ProviderError: no ONNX Runtime is installed.
    """
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise ProviderError(
            "ONNX Runtime is not installed: pip install 'bertrec[cpu]' (CPU only) or "
            "'bertrec[gpu]' (CUDA and CPU)"
        ) from exc
    return ort


def onnxruntime_installed() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


@lru_cache(maxsize=1)
def cuda_usable() -> bool:
    """True when the CUDA provider is compiled in *and* starts (libraries and a GPU present).

    onnxruntime-gpu lists CUDAExecutionProvider even on machines without a GPU; only
    starting a session tells. The probe runs once per process on a one-node model. When it
    fails, CUDA and cuDNN may still be installed as NVIDIA's pip packages
    (``onnxruntime-gpu[cuda,cudnn]``, or PyTorch's), which the dynamic loader does not search:
    ``onnxruntime.preload_dlls()`` loads them from there, and the probe runs once more.
    """
    if not onnxruntime_installed():
        return False
    ort = onnxruntime()
    if CUDA not in ort.get_available_providers():
        return False
    if _cuda_session_starts(ort):
        return True
    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return False
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # it prints what it did not find
            preload()
    except Exception:  # no NVIDIA packages, or ones it cannot load: not usable
        return False
    return _cuda_session_starts(ort)


def _cuda_session_starts(ort: ModuleType) -> bool:
    # The failed provider load logs an error at default severity; the caller gets one
    # warning from bertrec instead.
    ort.set_default_logger_severity(4)
    try:
        sess = ort.InferenceSession(_PROBE_MODEL, providers=[CUDA, CPU])
        return bool(sess.get_providers()[0] == CUDA)
    except Exception:  # any failure to start the provider means "not usable"
        return False
    finally:
        ort.set_default_logger_severity(2)
