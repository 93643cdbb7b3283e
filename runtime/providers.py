"""Which ONNX Runtime execution providers actually work here (listed is not the same as usable)."""

from __future__ import annotations

from functools import lru_cache

import onnxruntime as ort

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"

# A serialized one-node ONNX model (Identity, opset 13): enough to start a provider.
_PROBE_MODEL = (
    b'\x08\x08:7\n\x10\n\x01x\x12\x01y"\x08Identity\x12\x01pZ\x0f\n\x01x\x12\n\n\x08\x08\x01'
    b"\x12\x04\n\x02\x08\x01b\x0f\n\x01y\x12\n\n\x08\x08\x01\x12\x04\n\x02\x08\x01B\x04\n\x00\x10\r"
)


@lru_cache(maxsize=1)
def cuda_usable() -> bool:
    """True when the CUDA provider is compiled in *and* starts (libraries and a GPU present).

    onnxruntime-gpu lists CUDAExecutionProvider even on machines without a GPU; only
    starting a session tells. The probe runs once per process on a one-node model.
    """
    if CUDA not in ort.get_available_providers():
        return False
    # The failed provider load logs an error at default severity; the caller gets one
    # warning from bertrec instead.
    ort.set_default_logger_severity(4)
    try:
        sess = ort.InferenceSession(_PROBE_MODEL, providers=[CUDA, CPU])
        return sess.get_providers()[0] == CUDA
    except Exception:  # any failure to start the provider means "not usable"
        return False
    finally:
        ort.set_default_logger_severity(2)
