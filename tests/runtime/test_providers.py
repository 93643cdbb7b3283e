"""``cuda_usable``: listed is not usable; NVIDIA's pip-installed libraries are preloaded."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from bertrec.runtime import providers
from bertrec.runtime.providers import CPU, CUDA, cuda_usable


class _Runtime(SimpleNamespace):
    """An ONNX Runtime whose CUDA provider starts only once its libraries are loaded."""

    def __init__(self, listed: bool, loads: bool, preload: bool = True) -> None:
        super().__init__()
        self.loaded = False
        self.preloads = 0
        self.get_available_providers = lambda: [CUDA, CPU] if listed else [CPU]
        self.set_default_logger_severity = lambda level: None
        if preload:
            self.preload_dlls = self._preload
        self._loads = loads

    def _preload(self) -> None:
        self.preloads += 1
        print("noise that must not reach the caller's stdout")
        if not self._loads:
            raise OSError("libcudnn.so.9: cannot open shared object file")
        self.loaded = True

    def InferenceSession(self, model: Any, providers: list[str]) -> Any:  # noqa: N802
        if not self.loaded:
            raise RuntimeError("Failed to load library libonnxruntime_providers_cuda.so")
        return SimpleNamespace(get_providers=lambda: providers)


@pytest.fixture
def runtime(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    def install(rt: _Runtime) -> _Runtime:
        monkeypatch.setattr(providers, "onnxruntime", lambda: rt)
        monkeypatch.setattr(providers, "onnxruntime_installed", lambda: True)
        cuda_usable.cache_clear()
        return rt

    yield install
    cuda_usable.cache_clear()


def test_cuda_starts_after_preloading_nvidia_libraries(runtime: Any, capsys: Any) -> None:
    rt = runtime(_Runtime(listed=True, loads=True))
    assert cuda_usable() is True
    assert rt.preloads == 1
    assert capsys.readouterr().out == ""


def test_cuda_not_usable_when_preloading_fails_or_is_missing(runtime: Any) -> None:
    rt = runtime(_Runtime(listed=True, loads=False))
    assert cuda_usable() is False
    assert rt.preloads == 1
    runtime(_Runtime(listed=True, loads=True, preload=False))
    assert cuda_usable() is False


def test_unlisted_cuda_is_never_probed(runtime: Any) -> None:
    rt = runtime(_Runtime(listed=False, loads=True))
    assert cuda_usable() is False
    assert rt.preloads == 0


def test_cuda_usable_without_preloading_when_it_starts(runtime: Any) -> None:
    rt = _Runtime(listed=True, loads=True)
    rt.loaded = True  # libraries on the loader's path already
    runtime(rt)
    assert cuda_usable() is True
    assert rt.preloads == 0


def test_this_machine_answers_a_bool() -> None:
    cuda_usable.cache_clear()
    assert isinstance(cuda_usable(), bool)
