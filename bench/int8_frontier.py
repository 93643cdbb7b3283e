"""The int8 recipes explored for quantize/, measured in one run: speed, size, fidelity.

Each recipe is built from the same fp32 export; fidelity is against sentence-transformers
PyTorch fp32 on real item texts that are not the calibration set; speed is interleaved
against sentence-transformers fp32 at its best batch size. Rewrites the table in
quantize/README.md. ``python -m bench.int8_frontier [--quick] [--data DIR]``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

import bertrec
from bench.common import (
    add_data_arg,
    bench_model_dir,
    load_text_mix,
    machine_info,
    minilm_source,
    usable_cores,
    versions,
    write_record,
)
from bench.int8_smoothing import activation_absmax, smooth_matmuls
from bertrec.core import atomic_write_bytes, sha256_file
from bertrec.quantize.graph import (
    per_token_matmuls,
    quantize_embedding_rows,
    store_matmul_weights_fp16,
)
from bertrec.quantize.quantizer import _quantize_int8, matmul_groups
from bertrec.runtime.fidelity import fidelity
from bertrec.runtime.manifest import read_manifest, write_manifest
from bertrec.runtime.texts import default_sentences

README = Path(__file__).resolve().parents[1] / "quantize" / "README.md"
START, END = "<!-- frontier:start -->", "<!-- frontier:end -->"


@dataclass(frozen=True)
class Settings:
    texts: int = 1024
    repeats: int = 3
    budget: int = 1024
    st_batch_sizes: tuple[int, ...] = (8, 16, 32)
    invariance_texts: int = 256


def _dynamic(
    src: Path,
    dst: Path,
    exclude: list[str],
    per_channel: bool = True,
    ops: tuple[str, ...] = ("MatMul",),
) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(src),
        str(dst),
        per_channel=per_channel,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=list(ops),
        nodes_to_exclude=exclude,
        extra_options={"MatMulConstBOnly": True},
    )


def _post(dst: Path, fp16_names: list[str], emb_rows: bool) -> None:
    m = onnx.load(str(dst))
    if emb_rows:
        quantize_embedding_rows(m)
    store_matmul_weights_fp16(m, set(fp16_names))
    onnx.save(m, str(dst))


def earlier_graph(m: onnx.ModelProto) -> int:
    """Rewrite ``per_token_matmuls``' groups, in place, back into the graph it wrote until
    2026-11-30: ``|x|`` by ``Abs`` then ``ReduceMax``; ``Div, Round, Add 128, Clip, Cast``
    where ``QuantizeLinear`` stands now; ``MatMulInteger, Cast, Mul, Mul`` for
    ``MatMulIntegerToFloat`` and its ``Mul``. The same integers; kept so that one run
    measures what the rewrite gained. Returns the groups rewritten."""
    from onnx import TensorProto, helper, numpy_helper

    new_axes = next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), 13) >= 18
    consts = {"c128": 128.0, "c0": 0.0, "c255": 255.0}
    replaced: dict[str, list[onnx.NodeProto]] = {}
    for node in m.graph.node:
        if node.op_type != "MatMulIntegerToFloat":
            continue
        xq, wq, _, ws, azp, bzp = node.input
        base = xq[: -len("xq")]

        def t(suffix: str, base: str = base) -> str:
            return base + suffix

        m.graph.initializer.extend(
            numpy_helper.from_array(np.array(v, np.float32), t(k)) for k, v in consts.items()
        )
        reduce = (
            helper.make_node("ReduceMax", [t("ax"), t("axes")], [t("amax0")], keepdims=1)
            if new_axes
            else helper.make_node("ReduceMax", [t("ax")], [t("amax0")], axes=[1], keepdims=1)
        )
        replaced[t("amax")] = [
            helper.make_node("Abs", [t("x2")], [t("ax")]),
            reduce,
            helper.make_node("Max", [t("amax0"), t("eps")], [t("amax")]),
        ]
        replaced[t("xq")] = [
            helper.make_node("Div", [t("x2"), t("s")], [t("xs")]),
            helper.make_node("Round", [t("xs")], [t("xr")]),
            helper.make_node("Add", [t("xr"), t("c128")], [t("xo")]),
            helper.make_node("Clip", [t("xo"), t("c0"), t("c255")], [t("xc")]),
            helper.make_node("Cast", [t("xc")], [xq], to=TensorProto.UINT8),
        ]
        replaced[t("y2")] = [
            helper.make_node("MatMulInteger", [xq, wq, azp, bzp], [t("yi")]),
            helper.make_node("Cast", [t("yi")], [t("yf")], to=TensorProto.FLOAT),
            helper.make_node("Mul", [t("yf"), t("s")], [t("y1")]),
            helper.make_node("Mul", [t("y1"), ws], [t("y2")]),
        ]
        for out in ("hi", "lo", "nlo", "s1", "rows", "zps", "yw"):
            replaced[t(out)] = []
    nodes = []
    for node in m.graph.node:
        nodes.extend(replaced.get(node.output[0], [node]))
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    used = {name for node in nodes for name in node.input}
    unused = [init for init in m.graph.initializer if init.name not in used]
    for init in unused:  # the per-row scale's reshape and the unit scale
        m.graph.initializer.remove(init)
    return sum(node.op_type == "MatMulInteger" for node in nodes)


def recipes(model_dir: Path) -> dict[str, Callable[[Path], None]]:
    src = model_dir / "model.fp32.onnx"
    groups = matmul_groups(onnx.load(str(src)))
    down = groups["ffn_down"]
    down_attn = down + groups["attention"]
    default = down + groups["first_ffn_up"]

    def smoothed(alpha: float) -> Callable[[Path], None]:
        def build(dst: Path) -> None:
            m = onnx.load(str(src))
            inputs = [n.input[0] for n in m.graph.node if n.name in set(down)]
            am = activation_absmax(
                src,
                model_dir / "tokenizer.json",
                default_sentences(),
                inputs,
                read_manifest(model_dir).max_length,
            )
            smooth_matmuls(m, set(down), am, alpha)
            tmp = dst.with_suffix(".smooth.onnx")
            onnx.save(m, str(tmp))
            _dynamic(tmp, dst, [])
            _post(dst, [], True)

        return build

    def library(keep: tuple[str, ...]) -> Callable[[Path], None]:
        # The recipe add_variant builds, with the given MatMul groups kept in fp32.
        return lambda dst: (_quantize_int8(src, dst, keep), None)[1]

    def earlier(dst: Path) -> None:
        _quantize_int8(src, dst, ())
        m = onnx.load(str(dst))
        if not earlier_graph(m):
            raise RuntimeError("no per-token group found to rewrite")
        onnx.save(m, str(dst))

    def per_token(rows: list[str], keep: list[str]) -> Callable[[Path], None]:
        def build(dst: Path) -> None:
            tmp = dst.with_suffix(".dyn.onnx")
            _dynamic(src, tmp, rows + keep)
            m = onnx.load(str(tmp))
            tmp.unlink()
            per_token_matmuls(m, set(rows))
            onnx.save(m, str(dst))
            _post(dst, keep, True)

        return build

    return {
        "per-token activations, all MatMuls (bertrec default)": library(()),
        "per-token activations, all MatMuls, the earlier graph": earlier,
        "per-token activations, layer 0 FFN up in fp32": library(("first_ffn_up",)),
        "per-token activations, FFN down and layer 0 FFN up in fp32": library(
            ("ffn_down", "first_ffn_up")
        ),
        "per-tensor weights, all MatMuls + Gather": lambda d: _dynamic(
            src, d, [], per_channel=False, ops=("MatMul", "Gather")
        ),
        "per-channel, all MatMuls": lambda d: (_dynamic(src, d, []), _post(d, [], True)),
        "per-channel, layers 0-1 FFN down in fp32": lambda d: (
            _dynamic(src, d, down[:2]),
            _post(d, down[:2], True),
        ),
        "per-channel, all FFN down in fp32": lambda d: (
            _dynamic(src, d, down),
            _post(d, down, True),
        ),
        "per-channel, FFN down and layer 0 FFN up in fp32 (previous default)": lambda d: (
            _dynamic(src, d, default),
            _post(d, default, True),
        ),
        "per-channel, FFN down and attention in fp32": lambda d: (
            _dynamic(src, d, down_attn),
            _post(d, down_attn, True),
        ),
        "per-channel, FFN down with per-token activations": per_token(down, []),
        "per-channel, FFN down smoothed (alpha 0.5)": smoothed(0.5),
        "per-channel, FFN down smoothed (alpha 0.7)": smoothed(0.7),
    }


def _with_variant(model_dir: Path, work: Path, name: str, build: Callable[[Path], None]) -> Path:
    d = work / name.replace(" ", "_").replace(",", "").replace("(", "").replace(")", "")
    d.mkdir()
    shutil.copy2(model_dir / "tokenizer.json", d / "tokenizer.json")
    shutil.copy2(model_dir / "model.fp32.onnx", d / "model.fp32.onnx")
    build(d / "model.int8.onnx")
    m = read_manifest(model_dir)
    v = bertrec.Variant(
        "int8",
        "model.int8.onnx",
        sha256_file(d / "model.int8.onnx"),
        (d / "model.int8.onnx").stat().st_size,
    )
    write_manifest(
        d, bertrec.Manifest(**{**m.__dict__, "variants": {"fp32": m.variants["fp32"], "int8": v}})
    )
    return d


def run(s: Settings, data_dir: Path | None = None) -> dict[str, Any]:
    import torch
    from sentence_transformers import SentenceTransformer

    threads = usable_cores()
    torch.set_num_threads(threads)
    mix = load_text_mix(s.texts, data_dir=data_dir)
    texts = mix.texts
    model_dir = bench_model_dir()
    st = SentenceTransformer(str(minilm_source()), device="cpu")
    reference = st.encode(texts, normalize_embeddings=True, batch_size=32)
    fp32_size = (model_dir / "model.fp32.onnx").stat().st_size
    with tempfile.TemporaryDirectory() as tmp:
        encoders = {}
        rows: dict[str, dict[str, Any]] = {}
        for name, build in recipes(model_dir).items():
            d = _with_variant(model_dir, Path(tmp), name, build)
            enc = bertrec.Encoder(
                d,
                precision="int8",
                device="cpu",
                backend="onnxruntime",
                max_batch_tokens=s.budget,
                threads=threads,
            )
            encoders[name] = enc
            batched = enc.encode(texts)
            # Batch invariance: each of the first texts encoded alone against the same text
            # in the whole (length-sorted, padded) run.
            alone = np.stack([enc.encode([t])[0] for t in texts[: s.invariance_texts]])
            rows[name] = {
                "recipe": name,
                **fidelity(batched, reference),
                "invariance_min_cos": float(np.min(np.sum(alone * batched[: len(alone)], axis=1))),
                "size_ratio": (d / "model.int8.onnx").stat().st_size / fp32_size,
            }
        runs: dict[str, Callable[[], object]] = {
            n: (lambda e=e: e.encode(texts)) for n, e in encoders.items()
        }
        for bs in s.st_batch_sizes:
            runs[f"st-torch-fp32 bs{bs}"] = lambda bs=bs: st.encode(texts, batch_size=bs)
        for f in runs.values():
            f()  # warm-up
        times: dict[str, list[float]] = {n: [] for n in runs}
        for _ in range(s.repeats):
            for n, f in runs.items():
                t0 = time.perf_counter()
                f()
                times[n].append(time.perf_counter() - t0)
    speed = {n: len(texts) / statistics.median(t) for n, t in times.items()}
    st_best = max(v for n, v in speed.items() if n.startswith("st-torch"))
    for n, row in rows.items():
        row["sentences_per_s"] = speed[n]
        row["ratio_to_st_fp32"] = speed[n] / st_best
    return {
        "settings": asdict(s),
        "machine": machine_info(),
        "versions": versions(),
        "text_mix": mix.describe(),
        "st_fp32_best": st_best,
        "st_fp32": {n: v for n, v in speed.items() if n.startswith("st-")},
        "rows": list(rows.values()),
    }


def table(record: dict[str, Any]) -> str:
    lines = [
        f"Measured by `python -m bench.int8_frontier` on {record['machine'].get('cpu', '?')} "
        f"({record['settings']['texts']} real item texts, {len(default_sentences())} calibration "
        "sentences not among them); cosine vs sentence-transformers PyTorch fp32; speed at a "
        f"{record['settings']['budget']}-token budget, ratio to sentence-transformers fp32 at "
        f"its best batch size ({record['st_fp32_best']:.0f} sentences/s), same run.",
        "",
        "| recipe | sentences/s | × ST fp32 | mean cos | 1st-pct cos | min cos | alone vs batch "
        "min cos | size vs fp32 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in record["rows"]:
        lines.append(
            f"| {r['recipe']} | {r['sentences_per_s']:.0f} | {r['ratio_to_st_fp32']:.2f} | "
            f"{r['mean_cos']:.4f} | {r['p1_cos']:.4f} | {r['min_cos']:.4f} | "
            f"{_fmt_inv(r.get('invariance_min_cos'))} | {r['size_ratio']:.0%} |"
        )
    return "\n".join(lines)


def _fmt_inv(value: float | None) -> str:
    return "–" if value is None else f"{value:.6f}"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.int8_frontier", description=__doc__)
    p.add_argument("--quick", action="store_true", help="small run for CI smoke")
    add_data_arg(p)
    args = p.parse_args(argv)
    s = (
        Settings(texts=64, repeats=1, st_batch_sizes=(16,), invariance_texts=8)
        if args.quick
        else Settings()
    )
    record = run(s, args.data)
    path = write_record("int8-frontier", record, quick=args.quick)
    text = table(record)
    print(text)
    print(f"record: {path}")
    if not args.quick and README.is_file():
        doc = README.read_text(encoding="utf-8")
        if START in doc and END in doc:
            head, rest = doc.split(START, 1)
            new = head + START + "\n" + text + "\n" + END + rest.split(END, 1)[1]
            atomic_write_bytes(README, new.encode("utf-8"))


if __name__ == "__main__":
    main()
