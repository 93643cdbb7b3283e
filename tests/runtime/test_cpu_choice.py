"""runtime.cpu: the CPU's features from /proc/cpuinfo text, oneDNN's ISA cap, and auto's
backend per ISA (features monkeypatched), including the measured, cached choice."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import bertrec
import bertrec.runtime.cpu as cpu_mod
import bertrec.runtime.encoder as encoder_mod
from bertrec.runtime.cpu import CpuFeatures, onednn_allows_bf16, parse_cpuinfo
from bertrec.runtime.manifest import Variant, read_manifest, write_manifest

BASE = "fpu vme sse sse2 ssse3 sse4_1 sse4_2 popcnt avx f16c"
FLAGS = {
    "older": BASE,
    "avx2": f"{BASE} fma avx2",
    "avx2-vnni": f"{BASE} fma avx2 avx_vnni",
    "avx512": f"{BASE} fma avx2 avx512f avx512dq avx512bw avx512vl",
    "avx512-vnni": f"{BASE} fma avx2 avx512f avx512bw avx512vl avx512_vnni",
    "avx512-bf16": f"{BASE} fma avx2 avx512f avx512bw avx512_vnni avx_vnni avx512_bf16",
    "amx": f"{BASE} fma avx2 avx512f avx512bw avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8",
}


def cpuinfo(flags: str, model: str = "Test CPU @ 2.0GHz", processors: int = 2) -> str:
    block = (
        "processor\t: {i}\nvendor_id\t: GenuineIntel\nmodel name\t: {model}\n"
        "cpu MHz\t\t: 2000.000\nflags\t\t: {flags}\nbogomips\t: 4000.00\n"
    )
    return "\n".join(block.format(i=i, model=model, flags=flags) for i in range(processors))


@pytest.mark.parametrize("isa", sorted(FLAGS))
def test_parse_cpuinfo_names_each_isa(isa: str) -> None:
    f = parse_cpuinfo(cpuinfo(FLAGS[isa]))
    assert f.known and f.model == "Test CPU @ 2.0GHz"
    assert f.isa == isa
    assert f.isa in f.describe()


def test_parse_cpuinfo_reads_the_first_processor_and_handles_no_flags() -> None:
    text = cpuinfo(FLAGS["avx2"], processors=1) + "\n" + cpuinfo(FLAGS["amx"], processors=1)
    assert parse_cpuinfo(text).isa == "avx2"
    arm = "processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd evtstrm aes\n"
    f = parse_cpuinfo(arm)
    assert not f.known and f.isa == "unknown"
    assert parse_cpuinfo("").isa == "unknown"


def test_feature_properties() -> None:
    f = parse_cpuinfo(cpuinfo(FLAGS["avx512-bf16"]))
    assert f.avx2 and f.avx512 and f.vnni and f.bf16 and not f.amx
    g = parse_cpuinfo(cpuinfo(FLAGS["avx2-vnni"]))
    assert g.vnni and not g.avx512 and not g.bf16
    # The key names the kernel flags only: an unrelated flag does not change it.
    h = parse_cpuinfo(cpuinfo(FLAGS["avx2"] + " sha_ni"))
    assert h.key() == parse_cpuinfo(cpuinfo(FLAGS["avx2"])).key() != g.key()


def test_onednn_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    assert cpu_mod.onednn_cap() is None and onednn_allows_bf16(None)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx2")
    assert cpu_mod.onednn_cap() == "AVX2" and not onednn_allows_bf16("AVX2")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX")
    assert onednn_allows_bf16(cpu_mod.onednn_cap())
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "not-an-isa")
    assert cpu_mod.onednn_cap() is None


def test_cpu_has_bf16_follows_flags_and_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    import bertrec.runtime.openvino_runner as ov_mod

    monkeypatch.setattr(ov_mod, "openvino_importable", lambda: True)
    asked: list[str] = []

    class Core:
        def get_property(self, device: str, name: str) -> list[str]:
            asked.append(name)
            return ["FP32", "BF16", "INT8"]

    monkeypatch.setattr(ov_mod, "_core", lambda: Core())
    for isa, cap, want in [
        ("avx512-bf16", None, True),
        ("amx", None, True),
        ("avx512-vnni", None, False),
        ("avx2", None, False),
        ("avx512-bf16", "AVX2", False),
    ]:
        features = parse_cpuinfo(cpuinfo(FLAGS[isa]))
        monkeypatch.setattr(ov_mod, "cpu_features", lambda f=features: f)
        if cap:
            monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
        else:
            monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
        ov_mod.cpu_has_bf16.cache_clear()
        assert ov_mod.cpu_has_bf16() is want, (isa, cap)
    ov_mod.cpu_has_bf16.cache_clear()
    # OpenVINO is asked only where the flags and the cap allow bf16.
    assert len(asked) == 2


# -- auto's choice per ISA ------------------------------------------------------------------


def _with_int8(src: Path, dst: Path) -> Path:
    """A copy of a model directory whose manifest also lists its fp32 graph as "int8": the
    runtime cannot tell, and a measurement on it is quick."""
    shutil.copytree(src, dst)
    m = read_manifest(dst)
    fp32 = m.variants["fp32"]
    shutil.copyfile(dst / fp32.file, dst / "model.int8.onnx")
    int8 = Variant("int8", "model.int8.onnx", fp32.sha256, fp32.size_bytes)
    write_manifest(dst, m.with_variant(int8))
    return dst


@pytest.fixture()
def choose(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """choose_backend on a machine of a given ISA, with OpenVINO "installed" and the cache
    in a temp dir."""
    monkeypatch.setenv("BERTREC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(encoder_mod, "openvino_importable", lambda: True)

    import bertrec.runtime.openvino_runner as ov_mod

    def on(isa: str) -> None:
        features = parse_cpuinfo(cpuinfo(FLAGS[isa]))
        monkeypatch.setattr(encoder_mod, "cpu_features", lambda: features)
        monkeypatch.setattr(encoder_mod, "cpu_has_bf16", lambda: features.bf16)
        monkeypatch.setattr(ov_mod, "cpu_has_bf16", lambda: features.bf16)

    return on


@pytest.mark.parametrize(
    ("isa", "backend", "why", "with_int8"),
    [
        ("amx", "openvino", "amx: CPU has bf16", "openvino"),
        ("avx512-bf16", "openvino", "avx512-bf16: CPU has bf16", "onnxruntime"),
        ("avx512-vnni", "onnxruntime", "avx512-vnni: no bf16", "onnxruntime"),
        ("avx2-vnni", "onnxruntime", "avx2-vnni: no bf16", "onnxruntime"),
        ("older", "onnxruntime", "older: no bf16", "onnxruntime"),
    ],
)
def test_auto_by_isa(
    choose: Any, tiny_model_dir: Path, isa: str, backend: str, why: str, with_int8: str
) -> None:
    choose(isa)
    m = read_manifest(tiny_model_dir)
    good = replace(m, runtime_checks={"openvino-bf16": {"min_cos": 0.99999}})
    got = encoder_mod.choose_backend("auto", "cpu", "auto", good, tiny_model_dir, 1)
    assert got[0] == backend and why in got[1]
    # A model with an int8 variant: VNNI int8 wherever there is no AMX, bf16 CPUs included.
    int8 = replace(good, variants={**good.variants, "int8": good.variants["fp32"]})
    got = encoder_mod.choose_backend("auto", "cpu", "auto", int8, tiny_model_dir, 1)
    assert got[0] == with_int8
    if isa == "avx512-bf16":
        assert "VNNI int8 measured faster than bf16" in got[1]
        # bf16 asked for is OpenVINO bf16 still.
        assert encoder_mod.choose_backend("auto", "cpu", "bf16", int8)[0] == "openvino"
    # An asked-for backend or ONNX Runtime variant is never second-guessed.
    assert encoder_mod.choose_backend("onnxruntime", "cpu", "auto", good)[0] == "onnxruntime"
    assert encoder_mod.choose_backend("auto", "cpu", "int8", good)[0] == "onnxruntime"


def test_avx2_without_vnni_is_measured_once_and_cached(
    choose: Any, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bertrec.runtime.openvino_runner import openvino_importable

    if not openvino_importable():
        pytest.skip("bertrec[openvino] not installed")
    choose("avx2")
    d = _with_int8(tiny_model_dir, tmp_path / "m")
    m = read_manifest(d)
    backend, why = encoder_mod.choose_backend("auto", "cpu", "auto", m, d, 1)
    assert backend in ("onnxruntime", "openvino") and "measured now" in why
    files = list((tmp_path / "cache" / cpu_mod.CHOICE_CACHE).glob("*.json"))
    assert len(files) == 1
    record = json.loads(files[0].read_text(encoding="utf-8"))
    assert record["winner"] == backend and set(record["ms"]) == {"onnxruntime", "openvino"}
    # Second start: from the cache, no measurement.
    monkeypatch.setattr(cpu_mod, "time_runners", lambda *a: pytest.fail("measured again"))
    again = encoder_mod.choose_backend("auto", "cpu", "auto", m, d, 1)
    assert again[0] == backend and "cached measurement" in again[1]
    # The Encoder follows the choice (fp32 on OpenVINO, int8 on ONNX Runtime).
    enc = bertrec.Encoder(d, device="cpu", threads=1)
    assert enc.backend == backend
    assert enc.precision == ("fp32" if backend == "openvino" else "int8")
    # Without a model directory there is nothing to measure: ONNX Runtime, said so.
    assert "not measured" in encoder_mod.choose_backend("auto", "cpu", "auto", m)[1]


def test_measured_choice_cache_damaged_stale_and_unwritable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    def runner(name: str, delay: int) -> Any:
        def make() -> Any:
            calls.append(name)
            return lambda feeds: sum(range(delay))

        return make

    build = {"a": runner("a", 50_000), "b": runner("b", 10)}
    path = tmp_path / "c" / "choice.json"
    winner, data, cached = cpu_mod.measured_choice(path, build, {})
    assert (winner, cached) == ("b", False) and path.is_file()
    assert cpu_mod.measured_choice(path, build, {})[2] is True
    # Damaged: measured again, rewritten.
    path.write_text("{not json", encoding="utf-8")
    assert cpu_mod.measured_choice(path, build, {})[2] is False
    assert json.loads(path.read_text(encoding="utf-8"))["winner"] == "b"
    # Stale: other candidates, or a winner that is not one of them.
    path.write_text(json.dumps({**data, "candidates": ["a", "c"]}), encoding="utf-8")
    assert cpu_mod.measured_choice(path, build, {})[2] is False
    path.write_text(json.dumps({**data, "winner": "zzz"}), encoding="utf-8")
    assert cpu_mod.measured_choice(path, build, {})[2] is False
    # Unwritable (a file where the folder should be): measured every time, never an error.
    blocker = tmp_path / "blocker"
    blocker.write_text("", encoding="utf-8")
    bad = blocker / "choice.json"
    for _ in range(2):
        assert cpu_mod.measured_choice(bad, build, {})[:2][0] == "b"
    assert not bad.exists()


def test_features_of_this_machine_are_consistent() -> None:
    f = cpu_mod.cpu_features()
    assert isinstance(f, CpuFeatures)
    if Path("/proc/cpuinfo").is_file() and "flags" in Path("/proc/cpuinfo").read_text():
        assert f.known and f.isa != "unknown"
