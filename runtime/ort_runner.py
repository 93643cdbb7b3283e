"""ONNX Runtime backend: one session, optional IO binding into a reused per-thread buffer."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from bertrec.errors import ConfigError, FileFormatError, ProviderError

from .manifest import PRECISIONS, Manifest, check_against_model, verify_variant
from .providers import CPU, CUDA, cuda_usable


def pick_variant(manifest: Manifest, model_dir: Path, precision: str, preferred: str) -> str:
    """``precision``, or for ``auto`` the preferred variant when present, else fp32."""
    variants = manifest.variants
    if precision == "auto":
        return preferred if preferred in variants else "fp32"
    if precision not in PRECISIONS:
        raise ConfigError(
            f"unknown precision {precision!r}; choose from auto, {', '.join(PRECISIONS)} "
            "(or bf16 on the OpenVINO backend)"
        )
    if precision not in variants:
        raise ConfigError(
            f"precision {precision!r} is not in {str(model_dir)!r} (it has "
            f"{', '.join(sorted(variants))}); add it with `bertrec quantize "
            f"{model_dir} --precision {precision}` or pick another"
        )
    return precision


class OrtRunner:
    """Runs padded batches through an ONNX Runtime session on CPU or CUDA."""

    def __init__(
        self,
        model_dir: Path,
        manifest: Manifest,
        precision: str,
        device: str,
        io_binding: bool | None,
        threads: int,
        verify: bool = True,
    ) -> None:
        self.threads = threads
        self.output = manifest.output_name
        self.dim = manifest.dim
        available = ort.get_available_providers()
        if device == "cuda" and not cuda_usable():
            raise ProviderError(
                f"device='cuda' asked for, but CUDA does not start here (ONNX Runtime lists "
                f"{available}; a listed provider can still lack its GPU or CUDA/cuDNN "
                "libraries); install onnxruntime-gpu with CUDA 13 and cuDNN 9, or use device='cpu'"
            )
        use_cuda = device == "cuda" or (device == "auto" and cuda_usable())
        self.device = "cuda" if use_cuda else "cpu"
        self.precision = pick_variant(
            manifest, model_dir, precision, "fp16" if use_cuda else "int8"
        )
        path = verify_variant(model_dir, manifest.variants[self.precision], check_hash=verify)
        providers = [CUDA, CPU] if use_cuda else [CPU]
        try:
            self.session = ort.InferenceSession(str(path), self._options(), providers=providers)
        except Exception as exc:  # ORT raises its own types for bad files and providers
            if use_cuda:
                raise ProviderError(f"CUDA provider failed to start: {exc}") from exc
            raise FileFormatError(
                f"ONNX Runtime cannot load {str(path)!r} ({str(exc).splitlines()[0][:200]}); "
                "the file is damaged: re-export the model"
            ) from exc
        if use_cuda and self.session.get_providers()[0] != CUDA:
            raise ProviderError(
                f"the CUDA provider did not start (available: {available}); check the "
                "CUDA/cuDNN install or use device='cpu'"
            )
        self.providers: list[str] = list(self.session.get_providers())
        self.input_names = tuple(i.name for i in self.session.get_inputs())
        check_against_model(
            manifest,
            path,
            self.input_names,
            {o.name: o.shape for o in self.session.get_outputs()},
        )
        self.io_binding = use_cuda if io_binding is None else bool(io_binding)
        self._local = threading.local()

    def _options(self) -> ort.SessionOptions:
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        return so

    def run(self, feeds: dict[str, NDArray[np.int64]]) -> NDArray[np.float32]:
        """Embeddings of one padded batch. With IO binding the result is a view of a
        per-thread buffer that the next call on this thread overwrites: copy it out."""
        if not self.io_binding:
            result = self.session.run([self.output], feeds)[0]
            return np.asarray(result, dtype=np.float32)
        n = len(feeds["input_ids"])
        local = self._local
        # One IOBinding and one output buffer per thread: IOBinding is not thread-safe.
        if getattr(local, "binding", None) is None:
            local.binding = self.session.io_binding()
            local.buffer = np.empty((0, self.dim), dtype=np.float32)
        if len(local.buffer) < n:
            local.buffer = np.empty((max(n, 2 * len(local.buffer)), self.dim), dtype=np.float32)
        binding = local.binding
        for name, arr in feeds.items():
            binding.bind_cpu_input(name, arr)
        out = local.buffer[:n]
        # The output goes straight into host memory: on CUDA, ORT copies the small
        # [batch, dim] result there; on CPU the kernel writes it in place.
        binding.bind_output(
            name=self.output,
            device_type="cpu",
            device_id=0,
            element_type=np.float32,
            shape=out.shape,
            buffer_ptr=out.ctypes.data,
        )
        self.session.run_with_iobinding(binding)
        return out
