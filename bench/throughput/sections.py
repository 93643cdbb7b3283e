"""The README's lines for the machine's performance records: the ISA line, the GEMM peaks
(``peak``), start-up (``startup``) and, for ``throughput``, the share-of-peak columns and
the headline ratios of each shape (``bench.report`` calls these)."""

from __future__ import annotations

from typing import Any

from bench.common import CPU_FLAGS, fmt, md_table


def _pct(x: Any) -> str:
    return fmt(100 * x, ".0f") + " %" if isinstance(x, (int, float)) else "–"


def isa_line(machine: dict[str, Any]) -> str:
    """``ISA: avx512-bf16 (avx2, avx512f, ...; no amx_*)``: what picked the kernels."""
    flags = machine.get("cpu_flags", {})
    on = [f for f in CPU_FLAGS if flags.get(f)]
    off = [f for f in CPU_FLAGS if f in flags and not flags.get(f)]
    isa = machine.get("isa", "?")
    return f"ISA: **{isa}** (flags: {', '.join(on) or 'none'}; absent: {', '.join(off) or 'none'})"


def peak_rows(peaks: dict[str, Any]) -> list[list[str]]:
    rows = []
    for r in peaks.get("rows", []):
        rows.append(
            [
                r["library"],
                r["precision"],
                r["op"],
                fmt(r.get("gflops")),
                fmt(r.get("gflops_median")),
                r.get("error", ""),
            ]
        )
    return rows


def peak_section(rec: dict[str, Any], src: str) -> list[str]:
    s = rec.get("settings", {})
    best = ", ".join(
        f"{k} {fmt(v.get('gflops'))} ({v.get('library')})"
        for k, v in rec.get("by_precision", {}).items()
    )
    return [
        "### GEMM peak of this machine",
        "",
        f"`python -m bench.peak`, record `{src}`: ({s.get('m')} × {s.get('k')}) @ "
        f"({s.get('k')} × {s.get('n')}), {s.get('threads')} threads, best of "
        f"{s.get('repeats')} calls. {isa_line(rec.get('machine', {}))}. Peak GFLOP/s by "
        f"precision: {best}. The throughput tables divide each system's GFLOP/s by the peak "
        "of its precision, measured again at the start of that run.",
        "",
        *md_table(["library", "precision", "op", "GFLOP/s", "median", "note"], peak_rows(rec)),
    ]


def startup_section(rec: dict[str, Any], src: str) -> list[str]:
    s = rec.get("settings", {})
    lines = [
        "### Start-up",
        "",
        f"`python -m bench.startup`, record `{src}`: each start in a fresh process, median of "
        f"{s.get('repeats')}; seconds. cold = empty cache dir, warm = after one start, off = "
        "cache dir not creatable. MiniLM int8 (ONNX Runtime), warm cache, "
        f"`Encoder()` to the first vector: **{fmt(rec.get('int8_warm_to_first_vector_s'), '.3f')}"
        f" s** (target {rec.get('target_s')} s). Import of bertrec is paid once per process.",
        "",
    ]
    header = [
        "case", "cache", "import", "manifest", "backend choice", "sha256", "session / compile",
        "tokenizer", "first encode", "Encoder() → 1st vector",
    ]  # fmt: skip
    rows = []
    for r in rec.get("rows", []):
        p = r.get("phases", {})
        rows.append(
            [
                f"{r['case']} ({r.get('backend')} {r.get('precision')})",
                f"{r['cache_state']} ({'/'.join(r.get('cache', []))})",
                fmt(r.get("import_s"), ".3f"),
                fmt(p.get("manifest_s"), ".3f"),
                fmt(p.get("backend_choice_s"), ".3f"),
                fmt(p.get("verify_s"), ".3f"),
                fmt(p.get("session_s"), ".3f"),
                fmt(p.get("tokenizer_s"), ".3f"),
                fmt(r.get("first_vector_s"), ".3f"),
                fmt(r.get("to_first_vector_s"), ".3f"),
            ]
        )
    return lines + md_table(header, rows)


# -- throughput: the share of peak and the headline ratios ----------------------------------

SHARE_HEADER = ["GFLOP/s", "share of peak"]


def share_cells(entry: dict[str, Any]) -> list[str]:
    """GFLOP/s of the real tokens at the best setting and its share of the peak of the
    system's precision (``precision`` in brackets)."""
    best = entry.get("best", {})
    share = best.get("share_of_peak")
    return [
        fmt(best.get("gflops_per_s")),
        f"{_pct(share)} ({best.get('precision', '?')})" if share is not None else "–",
    ]


def headline(shape: dict[str, Any]) -> list[str]:
    """The issue's acceptance ratios for one shape, as README notes."""
    acc = shape.get("acceptance") or {}
    if acc.get("auto_x_st_fp32") is None:
        return []
    unit = "tokens/s" if shape.get("workload") == "long" else "sentences/s"
    out = [
        f"- `bertrec-auto` ({acc.get('auto')}): {fmt(acc.get('auto_x_st_fp32'), '.2f')}× "
        f"sentence-transformers fp32 and {fmt(acc.get('auto_x_fastest_peer'), '.2f')}× the "
        f"fastest peer (`{acc.get('fastest_peer')}`) in {unit} (same texts, so the same ratio "
        f"in either unit); share of peak {_pct(acc.get('auto_share_of_peak'))}."
    ]
    parts = [
        f"`{k.removesuffix('_share_of_peak')}` {_pct(v)}"
        for k, v in acc.items()
        if k.startswith("bertrec-") and k.endswith("_share_of_peak")
    ]
    if parts:
        out.append(
            "- Share of the GEMM peak of its precision (real tokens only; padding and the "
            "non-GEMM work count against it): " + ", ".join(parts) + "."
        )
    return out


def long_text_line(rec: dict[str, Any], shape: dict[str, Any]) -> str:
    """What the long workload is, for the shape's paragraph."""
    mix = rec.get("long_text_mix", {})
    toks = mix.get("tokens_untruncated", {})
    s = shape["settings"]
    return (
        f"{s['texts']} long texts ({mix.get('from', 'stdlib documentation')}): "
        f"{fmt(toks.get('min'))}–{fmt(toks.get('max'))} tokens untruncated (mean "
        f"{fmt(shape.get('mean_tokens_untruncated'), '.0f')}), truncated at max_length "
        f"{shape['max_length']} ({shape.get('truncated_texts', '?')} texts cut; mean "
        f"{fmt(shape.get('mean_tokens'), '.0f')} tokens as run). Sweep on the first "
        f"{s['sweep_texts']}, best = faster of that and batch {s.get('common_batch')}, median "
        f"of {rec['settings']['repeats']} runs on the first {s['time_texts']}."
    )


def fusion_section(rec: dict[str, Any], src: str) -> list[str]:
    """``bench.attention_fusion``: ONNX Runtime's transformer optimizer against the export."""
    s = rec.get("settings", {})
    rows = []
    for r in rec.get("rows", []):
        sh, lo = r.get("short", {}), r.get("long", {})
        rows.append(
            [
                str(r.get("variant")),
                fmt(sh.get("sentences_per_s")),
                fmt(sh.get("x_int8"), ".2f"),
                fmt(lo.get("sentences_per_s"), ".1f"),
                fmt(lo.get("x_int8"), ".2f"),
                fmt(min(sh.get("min_cos_vs_fp32", 1.0), lo.get("min_cos_vs_fp32", 1.0)), ".5f"),
                fmt(r.get("size_mb"), ".0f"),
            ]
        )
    return [
        "### Fused attention (ONNX Runtime's transformer optimizer)",
        "",
        f"`python -m bench.attention_fusion`, record `{src}`: MiniLM, {s.get('short_texts')} "
        f"short texts at batch {s.get('short_batch')} and {s.get('long_texts')} long texts at "
        f"batch {s.get('long_batch')}, sorted by length, median of {s.get('rounds')} "
        "interleaved rounds; min cosine against the exported fp32 file.",
        "",
        *md_table(
            ["graph", "short /s", "× int8", "long /s", "× int8", "min cos vs fp32", "MB"], rows
        ),
    ]
