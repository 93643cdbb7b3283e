"""Plots and the README's results section, from the latest JSON record of each kind.

``python -m bench.report`` reads bench/results/ (throughput-*, int8-frontier-*, batching-*,
scorer-*, recommend-batch-*, recsys-*, diversity-*, cf-scale-*, ray-*, serve-load-*; any kind may be
missing), draws
PNGs into
bench/results/plots/ and rewrites README.md between ``<!-- results:start -->`` and
``<!-- results:end -->`` (and nothing else; without the markers it prints the section).
``--quick`` (CI smoke) also accepts quick records and writes plots and the section into
a temp dir, never into the README.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from statistics import median
from typing import Any

from bench.common import REPO, RESULTS_DIR, fmt, latest_record, machine_line, md_table
from bench.plots import plot_frontier, plot_hybrid, plot_scorer, plot_throughput
from bench.throughput.sections import (
    SHARE_HEADER,
    fusion_section,
    headline,
    isa_line,
    long_text_line,
    peak_section,
    share_cells,
    startup_section,
)
from bertrec.core import atomic_write_bytes
from bertrec.rank import SUGGESTED_HYBRID_DIVERSITY

README = REPO / "README.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"
KINDS = (
    "throughput",
    "peak",
    "startup",
    "int8-frontier",
    "batching",
    "batching-long",
    "fusion",
    "scorer",
    "recommend-batch",
    "recsys",
    "diversity",
    "cf-scale",
    "ray",
    "serve-load",
    "gpu-check",
)
REGENERATE = "make bench"  # every benchmark, then python -m bench.report


def _when(rec: dict[str, Any]) -> str:
    """A record's ``written_utc`` (``YYYYMMDDTHHMMSSZ``) as ``YYYY-MM-DD HH:MM UTC``."""
    w = str(rec.get("written_utc", ""))
    if len(w) >= 13 and w[8] == "T":
        return f"{w[:4]}-{w[4:6]}-{w[6:8]} {w[9:11]}:{w[11:13]} UTC"
    return w or "?"


def _rel(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path)


# -- throughput -----------------------------------------------------------------------------


def throughput_section(rec: dict[str, Any], src: str) -> list[str]:
    lines = [
        "### Encode throughput",
        "",
        f"`python -m bench.throughput`, record `{src}` ({_when(rec)}, "
        f"full run {fmt(rec.get('elapsed_s'))} s). Machine: {machine_line(rec['machine'])}. "
        f"Threads: {rec['threads'].get('torch_intra_op')} for every system "
        "(torch = ONNX Runtime intra-op = OpenVINO).",
        "",
        isa_line(rec["machine"])
        + (
            "; GEMM peaks measured at the start of the run (GFLOP/s): "
            + ", ".join(
                f"{k} {fmt(v.get('gflops'))} ({v.get('library')})"
                for k, v in rec["peak"].get("by_precision", {}).items()
            )
            if rec.get("peak")
            else ""
        )
        + ".",
    ]
    load = rec["machine"].get("loadavg_at_start")
    if load:
        lines[-1] += (
            f" Load average at start {load[0]}, at end {(rec.get('loadavg_at_end') or ['?'])[0]}"
            " (other work on the machine lowers the figures; `cpu_util` in the record shows it)."
        )
    mix = rec.get("text_mix", {})
    by = mix.get("by_source", {})
    for name, shape in rec["shapes"].items():
        s = shape["settings"]
        lines += ["", f"**{name}** ({_shape_title(name)})", ""]
        if shape.get("workload") == "long":
            lines.append(long_text_line(rec, shape))
        elif name == "minilm":
            lines.append(
                f"{s['texts']} texts: {by.get('item_text', '?')} MovieLens item texts (title, "
                f"genres, tags), {by.get('title', '?')} titles, {by.get('paragraph', '?')} "
                f"stdlib docstring paragraphs (40-150 words); mean {shape['mean_tokens']:.1f} "
                f"tokens (max_length {shape['max_length']}). Candidate setting from a sweep on "
                f"the first {s['sweep_texts']} texts (faster of 2 interleaved runs); "
                "best = the faster of that and batch 32, each the median of "
                f"{rec['settings']['repeats']} interleaved runs on the first "
                f"{s.get('time_texts', s['texts'])} texts (mean "
                f"{shape.get('mean_tokens_timed', shape['mean_tokens']):.1f} tokens); cosine vs "
                f"sentence-transformers PyTorch fp32 at batch {rec['settings']['common_batch']} "
                f"on all {s['texts']}."
            )
        else:
            lines.append(
                f"Random weights, throughput only: first {s.get('time_texts', s['texts'])} texts "
                f"of the same mix, mean {shape.get('mean_tokens_timed', shape['mean_tokens']):.1f}"
                f" tokens; medians of {rec['settings']['repeats']} interleaved runs."
            )
        lines.append("")
        bs = s.get("common_batch") or rec["settings"].get("common_batch", 32)
        header = ["system", "best setting", "sentences/s", "tokens/s", "× ST fp32", f"bs {bs} /s",
                  f"× ST fp32 @{bs}"]  # fmt: skip
        has_share = any("share_of_peak" in e.get("best", {}) for e in shape["systems"].values())
        if has_share:
            header += SHARE_HEADER
        if s.get("latency_texts"):
            header += ["p50 / p99 ms (batch 1)"]
        if s.get("fidelity"):
            header += ["mean cos", "p1 cos", "min cos"]
        rows, notes = [], []
        for sys_name, e in shape["systems"].items():
            if "best" not in e and "common" not in e:
                notes.append(
                    f"- `{sys_name}` did not run ({e.get('stage', '?')}): {e.get('error')}"
                )
                continue
            best, common = e.get("best", {}), e.get("common", {})
            row = [
                f"{e['label']}",
                best.get("config", "–"),
                fmt(best.get("sentences_per_s")),
                fmt(best.get("tokens_per_s")),
                fmt(e.get("ratio_best_to_st_fp32"), ".2f"),
                fmt(common.get("sentences_per_s")),
                fmt(e.get("ratio_common_to_st_fp32"), ".2f"),
            ]
            if has_share:
                row += share_cells(e)
            if s.get("latency_texts"):
                lat = e.get("latency_batch1", {})
                row.append(f"{fmt(lat.get('p50_ms'), '.1f')} / {fmt(lat.get('p99_ms'), '.1f')}")
            if s.get("fidelity"):
                fid = e.get("fidelity", {})
                row += [
                    fmt(fid.get("mean_cos"), ".5f"),
                    fmt(fid.get("p1_cos"), ".4f"),
                    fmt(fid.get("min_cos"), ".4f"),
                ]
            rows.append(row)
            if e.get("status") == "failed":
                notes.append(f"- `{sys_name}` stopped during {e.get('stage')}: {e.get('error')}")
            info = e.get("info", {})
            if sys_name == "bertrec-auto":
                notes.append(
                    f"- `bertrec-auto` is `Encoder(model_dir)` with no arguments: it chose "
                    f"{info.get('backend')} {info.get('precision')} ({info.get('backend_reason')})"
                    f", max_batch_tokens {info.get('default_max_batch_tokens')}."
                )
            if sys_name == "st-openvino" and info.get("INFERENCE_PRECISION_HINT"):
                oi = info.get("versions", {}).get("optimum-intel", "?")
                notes.append(
                    f"- `st-openvino` (its own venv, optimum-intel {oi}) runs OpenVINO's "
                    f"default inference precision on this CPU: {info.get('precision')}."
                )
            if info.get("int8_export_refused") and sys_name == "bertrec-ort-fp32":
                notes.append(f"- bertrec int8 export refused: {info['int8_export_refused']}")
        lines += md_table(header, rows)
        notes = headline(shape) + notes
        if name == "minilm":
            notes.append(
                "- Figures from one run on a shared 2-core VM whose speed moves between (and "
                "within) runs: see the spread line below; the `seconds` of every timed run are "
                "in the record."
            )
        if notes:
            lines += ["", *notes]
    return lines


def _shape_title(name: str) -> str:
    return {
        "minilm": "all-MiniLM-L6-v2, 6 layers, 384 hidden",
        "bert-base": "bert-base-sized BertConfig, 12 layers, 768 hidden, random weights",
        "minilm-long": "all-MiniLM-L6-v2, long texts, max_length 256",
        "bert-base-long": "bert-base-sized, random weights, long texts, max_length 512",
    }.get(name, name)


# -- the other records ----------------------------------------------------------------------


def frontier_section(rec: dict[str, Any], src: str) -> list[str]:
    lines = [
        "### INT8 speed / accuracy frontier",
        "",
        f"`python -m bench.int8_frontier`, record `{src}`; sentences/s and × ST fp32 at its "
        f"best batch size ({fmt(rec.get('st_fp32_best'))} sentences/s), cosine vs ST fp32.",
        "",
    ]
    rows = [
        [
            str(r.get("recipe")),
            fmt(r.get("sentences_per_s")),
            fmt(r.get("ratio_to_st_fp32"), ".2f"),
            fmt(r.get("mean_cos"), ".4f"),
            fmt(r.get("p1_cos"), ".4f"),
            fmt(r.get("min_cos"), ".4f"),
            fmt(r.get("invariance_min_cos"), ".6f"),
            fmt(r.get("size_ratio"), ".0%"),
        ]
        for r in rec.get("rows", [])
    ]
    header = [
        "recipe",
        "sentences/s",
        "× ST fp32",
        "mean cos",
        "p1 cos",
        "min cos",
        "alone vs batch min cos",
        "size",
    ]
    return lines + md_table(header, rows)


def batching_section(rec: dict[str, Any], src: str) -> list[str]:
    s = rec.get("settings", {})
    long = s.get("workload") == "long"
    lines = [
        "### Token-budget batching" + (", long texts" if long else ""),
        "",
        f"`python -m bench.token_budget{' --workload long' if long else ''}`, record `{src}`: "
        f"{s.get('texts')} {'long ' if long else ''}texts, "
        f"{s.get('backend')} {s.get('precision')}, mean {fmt(rec.get('mean_tokens'), '.1f')} "
        f"tokens. Best budget: {rec.get('best_budget')}; "
        f"{fmt(rec.get('budget_vs_best_fixed'), '.2f')}× the best fixed batch size.",
        "",
    ]
    rows = [
        [str(r.get("config")), fmt(r.get("sentences_per_s")), fmt(r.get("tokens_per_s"))]
        for r in rec.get("rows", [])
    ]
    return lines + md_table(["setting", "sentences/s", "tokens/s"], rows)


def scorer_section(rec: dict[str, Any], src: str) -> list[str]:
    lines = ["### Ranking (top-k cosine)", "", f"`python -m bench.scorer`, record `{src}`.", ""]
    rows = []
    for r in rec.get("results", []):
        m = r.get("median_s", {})
        rows.append(
            [
                f"{r.get('n', 0):,}",
                str(r.get("queries")),
                fmt(m.get("bertrec", math.nan) * 1e3, ".2f"),
                fmt(m.get("faiss_flatip", math.nan) * 1e3, ".2f"),
                fmt(m.get("naive_sort", math.nan) * 1e3, ".2f"),
                fmt(r.get("speedup_vs_faiss"), ".2f"),
                fmt(r.get("agreement_with_faiss"), ".3f"),
                fmt(m.get("bertrec", math.nan) / m.get("bare_gemv", math.nan), ".2f"),
            ]
        )
    header = ["catalog", "queries", "bertrec ms", "faiss ms", "naive ms", "× faiss", "agree"]
    header.append("÷ bare `catalog @ q`")
    return lines + md_table(header, rows)


def recommend_batch_section(rec: dict[str, Any], src: str) -> list[str]:
    st = rec.get("settings", {})
    same = "yes" if rec.get("all_equal") else "**no**"
    lines = [
        "### Batched recommendations",
        "",
        f"`python -m bench.recommend_batch`, record `{src}`: `Recommender.recommend_batch` "
        "against one `recommend` call per user, same arguments, top "
        f"{st.get('k')}; medians of {st.get('repeats')} interleaved rounds after a warm-up. "
        f"Same lists from both paths (ids in order, scores within {st.get('tolerance')}): "
        f"{same}.",
        "",
    ]
    rows = []
    for name, c in rec.get("cases", {}).items():
        runs, check = c.get("runs", {}), c.get("check", {})
        rows.append(
            [
                name,
                fmt(c.get("users"), ","),
                fmt(c.get("users_per_run"), ","),
                fmt(c.get("items"), ","),
                fmt(c.get("history_mean"), ".1f"),
                fmt(runs.get("batch", {}).get("users_per_s"), ".1f"),
                fmt(runs.get("loop", {}).get("users_per_s"), ".1f"),
                fmt(c.get("batch_vs_loop"), ".2f"),
                fmt(check.get("max_score_diff"), ".1e"),
            ]
        )
    header = ["case", "users", "users per run", "items", "mean history", "batch users/s",
              "loop users/s", "batch ÷ loop", "max score diff"]  # fmt: skip
    lines += md_table(header, rows)
    synthetic = rec.get("cases", {}).get("synthetic")
    if synthetic:
        lines += [
            "",
            f"Synthetic: random unit vectors of dim {synthetic.get('dim')}, "
            f"{st.get('history')} random history items per user, popularity "
            f"{synthetic.get('popularity')}; each round times the next "
            f"{fmt(synthetic.get('users_per_run'), ',')} users. MovieLens: "
            f"{rec['cases'].get('movielens', {}).get('history', 'the recsys_eval protocol')}.",
        ]
    return lines


def recsys_section(rec: dict[str, Any], src: str) -> list[str]:
    st = rec.get("settings", {})
    lines = [
        "### MovieLens recommendation quality",
        "",
        f"`python -m bench.recsys_eval`, record `{src}`: {st.get('users_evaluated')} users, "
        f"last {st.get('n_test')} liked ratings held out, metrics @{st.get('k')} on the test "
        "split.",
        "",
    ]
    rows = [
        [
            str(name),
            fmt(m.get("ndcg"), ".4f"),
            fmt(m.get("recall"), ".4f"),
            fmt(m.get("diversity"), ".3f"),
            fmt(m.get("coverage"), ".3f"),
            fmt(m.get("vs_popularity"), ".3f"),
        ]
        for name, m in rec.get("test", {}).items()
        if isinstance(m, dict)
    ]
    header = ["method", "NDCG", "recall", "diversity", "coverage", "NDCG × popularity"]
    lines += md_table(header, rows)
    mmr = [r for r in rec.get("mmr_sweep") or [] if isinstance(r.get("test"), dict)]
    if mmr:
        lines += [
            "",
            "Diversity re-ranking of the defaults (fp32), `recommend(diversity=...)`, change "
            "against no re-ranking (textbook MMR and other variants: the diversity frontier "
            "section):",
            "",
        ]

        def pct(r: dict[str, Any], split: str, key: str) -> str:
            return fmt(100 * r[split].get(key, math.nan), "+.1f") + " %"

        lines += md_table(
            [
                "diversity",
                "validation NDCG change",
                "validation ILD change",
                "test NDCG",
                "test NDCG change",
                "test ILD",
                "test ILD change",
            ],
            [
                [
                    fmt(r.get("mmr_diversity"), ".2f"),
                    pct(r, "validation", "ndcg_change"),
                    pct(r, "validation", "diversity_change"),
                    fmt(r["test"].get("ndcg"), ".4f"),
                    pct(r, "test", "ndcg_change"),
                    fmt(r["test"].get("diversity"), ".3f"),
                    pct(r, "test", "diversity_change"),
                ]
                for r in mmr
            ],
        )
        if rec.get("diversity_pick_rule"):
            lines += [
                "",
                f"Validation pick ({rec['diversity_pick_rule']}): {rec.get('diversity_pick')}.",
            ]
    acc = rec.get("acceptance")
    if isinstance(acc, dict) and acc:

        def val(v: Any) -> str:
            if isinstance(v, list):  # a confidence interval
                return "[" + ", ".join(fmt(x, "+.2%") for x in v) + "]"
            return fmt(v, ".4g")

        lines += ["", "Acceptance: " + "; ".join(f"{k} {val(v)}" for k, v in acc.items())]
    return lines + hybrid_lines(rec.get("hybrid"))


def hybrid_lines(h: Any) -> list[str]:
    """The hybrid part of a recsys record: every method on each protocol, the tuning, the
    diversity re-ranking of the hybrid and the acceptance lines."""
    if not isinstance(h, dict) or not h.get("test"):
        return []
    users = h.get("users", {}).get("test", {})
    lines = [
        "",
        "#### Hybrid recommendation (content + collaborative)",
        "",
        "Same run and test split. Protocols: "
        + "; ".join(f"**{k}**: {v}" for k, v in h.get("protocols", {}).items())
        + ". Inputs: "
        + "; ".join(f"{k}: {v}" for k, v in h.get("inputs", {}).items())
        + ". Every setting tuned on the validation split.",
        "",
    ]
    rows = []
    for protocol, methods in h["test"].items():
        for method, m in methods.items():
            rows.append(
                [
                    f"{protocol} ({users.get(protocol, '?')})",
                    method,
                    fmt(m.get("ndcg"), ".4f"),
                    fmt(m.get("recall"), ".4f"),
                    fmt(m.get("diversity"), ".3f"),
                    fmt(m.get("genre_coverage"), ".3f"),
                    fmt(m.get("coverage"), ".3f"),
                ]
            )
    header = ["protocol (users)", "method", "NDCG", "recall", "ILD", "genre coverage", "coverage"]
    lines += md_table(header, rows)
    pick = h.get("tuning", {}).get("hybrid", {}).get("pick", {})
    lines += [
        "",
        f"Hybrid pick: collab {pick.get('collab')}, settings {pick.get('settings')}; EASE "
        f"{h.get('tuning', {}).get('ease', {}).get('pick')}, ALS "
        f"{h.get('tuning', {}).get('als', {}).get('pick')}. Library defaults are the pick: "
        f"{h.get('defaults_are_pick')}.",
    ]
    div = [r for r in h.get("diversity_sweep") or [] if isinstance(r.get("test"), dict)]
    if div:
        lines += [
            "",
            "Diversity re-ranking of the hybrid (warm protocol), change against none:",
            "",
        ]

        def pct(r: dict[str, Any], split: str, key: str) -> str:
            return fmt(100 * r[split].get(key, math.nan), "+.1f") + " %"

        lines += md_table(
            ["diversity", "validation NDCG", "test NDCG", "test ILD", "test genre coverage"],
            [
                [
                    fmt(r.get("mmr_diversity"), ".2f"),
                    pct(r, "validation", "ndcg_change"),
                    pct(r, "test", "ndcg_change"),
                    pct(r, "test", "diversity_change"),
                    pct(r, "test", "genre_coverage_change"),
                ]
                for r in div
            ],
        )
        pick = h.get("diversity_pick")
        lines += [
            "",
            f"Validation pick for the hybrid: {pick} (`bertrec.rank.SUGGESTED_HYBRID_DIVERSITY`"
            f" = {SUGGESTED_HYBRID_DIVERSITY}: the pick: {pick == SUGGESTED_HYBRID_DIVERSITY}).",
        ]
    acc = h.get("acceptance") or {}
    if acc:

        def val(v: Any) -> str:
            if isinstance(v, list):
                return "[" + ", ".join(fmt(x, ".3f") for x in v) + "]"
            return fmt(v, ".4g")

        lines += ["", "Acceptance: " + "; ".join(f"{k} {val(v)}" for k, v in acc.items())]
    return lines


def cf_scale_section(rec: dict[str, Any], src: str) -> list[str]:
    st, acc = rec.get("settings", {}), rec.get("acceptance", {})
    lines = [
        "### Collaborative model at scale",
        "",
        f"`python -m bench.cf_scale`, record `{src}`: synthetic {fmt(st.get('items'), ',')} "
        f"items (dim {st.get('dim')}), {fmt(st.get('interactions'), ',')} interactions, "
        f"{fmt(st.get('users'), ',')} users; model `{st.get('model')}`. Fit "
        f"{fmt(rec.get('fit_s'), '.1f')} s, peak RSS {fmt(rec.get('peak_rss_gib'), '.2f')} "
        f"GiB. Machine: {machine_line(rec.get('machine', {}))}.",
        "",
    ]
    rows = [
        [
            name,
            fmt(lat.get("p50_ms"), ".1f"),
            fmt(lat.get("p90_ms"), ".1f"),
            fmt(lat.get("p99_ms"), ".1f"),
        ]
        for name, lat in rec.get("latency", {}).items()
    ]
    lines += md_table(["recommend (one user)", "p50 ms", "p90 ms", "p99 ms"], rows)
    topm = rec.get("top_m_selection_ms")
    if topm:
        lines += [
            "",
            "The knn profile's top-m selection for one user over the catalog: running "
            f"maxima {fmt(topm.get('running_maxima'), '.1f')} ms, `np.partition` "
            f"{fmt(topm.get('np_partition'), '.1f')} ms.",
        ]
    if acc:
        lines += ["", "Acceptance: " + "; ".join(f"{k} {fmt(v, '.4g')}" for k, v in acc.items())]
    return lines


def diversity_section(rec: dict[str, Any], src: str) -> list[str]:
    st = rec.get("settings", {})
    loss, target = st.get("max_ndcg_loss", math.nan), st.get("target_gain", math.nan)
    lines = [
        "### Diversity re-ranking frontier",
        "",
        f"`python -m bench.diversity_frontier`, record `{src}`: {st.get('users')} users per "
        f"split, {st.get('pool')} candidates each. Intra-list diversity change at "
        f"-{fmt(100 * loss, '.0f')} % NDCG@10, interpolated on each variant's frontier "
        f"(target +{fmt(100 * target, '.0f')} %):",
        "",
    ]
    splits = rec.get("splits", {})
    names = list(splits.get("test", {}).get("variants", {}))

    def cell(split: str, name: str) -> str:
        v = splits.get(split, {}).get("variants", {}).get(name, {})
        g = v.get("gain_at_loss")
        if g is None:
            return "not reached"
        return fmt(100 * g, "+.1f") + " %"

    def points(name: str) -> str:
        pts = splits.get("test", {}).get("variants", {}).get(name, {}).get("points", [])
        return ", ".join(
            f"{fmt(p.get('weight'), 'g')}: {fmt(100 * p.get('ndcg_change', math.nan), '+.1f')}"
            f" / {fmt(100 * p.get('diversity_change', math.nan), '+.1f')}"
            for p in pts
        )

    lines += md_table(
        ["variant", "validation", "test", "test points (weight: NDCG % / ILD %)"],
        [[n, cell("validation", n), cell("test", n), points(n)] for n in names],
    )
    decay = [
        f"{split} {fmt(v.get('hit_rate_decay'), '.2f')}"
        for split, v in splits.items()
        if isinstance(v, dict)
    ]
    lines += ["", "Hit rate of a candidate rank ~ rank ** -a: a = " + ", ".join(decay) + "."]
    quint = [
        f"{split} " + " / ".join(fmt(100 * h, ".1f") for h in v["hit_rate_by_similarity_quintile"])
        for split, v in splits.items()
        if isinstance(v, dict) and v.get("hit_rate_by_similarity_quintile")
    ]
    if quint:
        lines += [
            "Hit rate (%) of candidates ranked 11-100 by quintile of mean cosine to the top 10, "
            "least similar first: " + "; ".join(quint) + "."
        ]
    return lines


def ray_section(rec: dict[str, Any], src: str) -> list[str]:
    lines = [
        "### Ray overhead",
        "",
        f"`python -m bench.ray_overhead`, record `{src}`: ray.init "
        f"{fmt(rec.get('ray_init_s'), '.1f')} s.",
        "",
    ]
    rows = [
        [
            str(r.get("engine")),
            str(r.get("workers")),
            str(r.get("threads_per_worker")),
            fmt(r.get("rows")),
            fmt(r.get("rows_per_s")),
        ]
        for r in rec.get("rows", [])
    ]
    return lines + md_table(["engine", "workers", "threads", "rows", "rows/s"], rows)


def serve_section(rec: dict[str, Any], src: str) -> list[str]:
    off = rec.get("offline", {})
    systems = rec.get("systems", {})
    names = [str(level[0]) for level in rec.get("settings", {}).get("levels", [])]
    st = rec.get("settings", {})
    rounds = st.get("rounds", 1)
    inter = off.get("interleaved", {})
    if rounds > 1:
        how = (
            f"{fmt(st.get('duration_s'), '.0f')} s per level and server in {rounds} rounds of "
            "every server in turn, the order reversed every other round; each figure is the "
            "median of the rounds"
        )
    else:
        how = f"{fmt(st.get('duration_s'), '.0f')} s per level, interleaved across servers"
    reference = f"{fmt(off.get('sentences_per_s'))} sentences/s"
    if inter:
        runs = ", ".join(fmt(x) for x in inter.get("runs_sentences_per_s", []))
        by_round = ", ".join(fmt(x, ".2f") for x in inter.get("served_ratio_by_round", []))
        reference = (
            f"{fmt(inter.get('sentences_per_s'))} sentences/s, the median of runs made before "
            f"each round of {inter.get('level')} ({runs}; served at that level over the run "
            f"before it, by round: {by_round}; before the servers started, best of "
            f"{len(off.get('runs_sentences_per_s', []))}: {fmt(off.get('sentences_per_s'))})"
        )
    lines = [
        "### Serving under load",
        "",
        f"`python -m bench.serve_load`, record `{src}` ({machine_line(rec.get('machine', {}))}"
        f"): closed-loop clients on loopback, {how}. Offline `Encoder.encode` on the same "
        f"texts: {reference}; a bare `encode([text])` call: "
        f"p50 {fmt(off.get('bare_encode_1', {}).get('p50_ms'), '.1f')} ms.",
        "",
    ]

    def level(system: str, name: str) -> dict[str, Any]:
        rows = systems.get(system, {}).get("levels", [])
        return next((x for x in rows if x.get("level") == name), {})

    shown = [s for s, e in systems.items() if e.get("levels")]
    what = ("sentences/s", "p99 ms", "CPU ms/sentence")
    header = ["load"] + [f"{s} {w}" for s in shown for w in what]
    rows = []
    for name in names:
        row = [name]
        for system in shown:
            r = level(system, name)
            row += [
                fmt(r.get("sentences_per_s")),
                fmt(r.get("p99_ms"), ".0f"),
                fmt(r.get("server_cpu_ms_per_sentence"), ".2f"),
            ]
        rows.append(row)
    lines += md_table(header, rows)
    skipped = [f"{s}: {e.get('why', '')[:120]}" for s, e in systems.items() if not e.get("levels")]
    if skipped:
        lines += ["", "Not run: " + "; ".join(skipped) + "."]
    verdicts = [
        f"{name} {'met' if a.get('met') else '**not met**'} "
        f"({fmt(a.get('value'), '.6f' if '0.9999' in str(a.get('bar')) else '.3g')}, "
        f"bar {a.get('bar')})"
        for name, a in rec.get("acceptance", {}).items()
        if not isinstance(a.get("value"), dict)
    ]
    others = [
        f"{name} {'met' if a.get('met') else '**not met**'}"
        for name, a in rec.get("acceptance", {}).items()
        if isinstance(a.get("value"), dict)
    ]
    lines += [
        "",
        "CPU ms/sentence is the server process's CPU time per sentence: what a level costs "
        "it whatever else the machine runs (sentences/s moves with the load around it: load "
        f"average {rec.get('machine', {}).get('loadavg_at_start')} at the start, "
        f"{rec.get('loadavg_at_end')} at the end).",
        "",
        "Acceptance: " + "; ".join(verdicts + others) + ".",
    ]
    from bench.serve_load import vs_naive_by_round  # imports the load generator (aiohttp)

    naive = rec.get("acceptance", {}).get("vs_naive", {}).get("value", {})
    paired = [
        f"{name} {fmt(naive.get(name), '.2f')} (by round "
        f"{', '.join(fmt(x, '.2f') for x in ratios)}; median {fmt(median(ratios), '.2f')})"
        for name, ratios in vs_naive_by_round(rec).items()
    ]
    if paired:
        lines += [
            "",
            "bertrec over the naive server, the ratio of the medians (the acceptance line) "
            "and each round's pair, run back to back: " + "; ".join(paired) + ".",
        ]
    c32 = level("bertrec", "1 text, c=32")
    if "machine_idle_share" in c32:
        cores = rec.get("machine", {}).get("cores_logical") or "the"
        lines += [
            "",
            f"Where the machine's {cores} cores went at 1 text, c=32 (bertrec's rounds, "
            f"warm-ups included): the server {fmt(c32.get('server_cores_used'), '.2f')} "
            f"cores, its inference workers running windows "
            f"{fmt(100 * c32.get('engine_busy_share', float('nan')), '.0f')}% of the time; "
            f"the load generator {fmt(c32.get('loadgen_cores'), '.2f')} cores; idle "
            f"{fmt(100 * c32['machine_idle_share'], '.1f')}% of the machine.",
        ]
    ceiling = rec.get("engine_ceiling", {})
    if ceiling.get("levels"):
        parts = []
        for name, row in ceiling["levels"].items():
            served = level("bertrec", name).get("sentences_per_s")
            eng = row.get("sentences_per_s")
            share = served / eng if served and eng else None
            parts.append(
                f"{name}: {fmt(eng)} sentences/s in windows of {row.get('window_texts')} "
                f"(served: {fmt(share, '.2f')}x of it)"
            )
        head = ceiling["levels"].get("1 text, c=32", {}).get("sentences_per_s")
        served = level("bertrec", "1 text, c=32").get("sentences_per_s")
        offline = rec.get("offline", {}).get("sentences_per_s")
        split = ""
        at = rec.get("engine_at_served_windows")
        inter = rec.get("offline", {}).get("interleaved", {}).get("sentences_per_s")
        if at and head and served and inter and offline:
            split = (
                f" At c=32 these windows of {ceiling['levels']['1 text, c=32']['window_texts']} "
                f"texts alone reach {head / offline:.2f}x offline `encode` (which sorts all its "
                "texts by length into full batches), but the server's windows held "
                f"{at['served_texts_per_window']:.1f} texts on average: while two run, the "
                "clients of a third are answered and come back. The engine alone on windows of "
                f"{at['window_texts']} (each tokenized and cut as a worker does, no HTTP), "
                "each run right after an offline pass, reached "
                f"{at['ratio']:.2f}x offline (by round "
                + ", ".join(f"{x:.2f}" for x in at["ratio_by_round"])
                + f"); served at {served / inter:.2f}x offline, the server keeps "
                f"{served / inter / at['ratio']:.2f}x of what its windows allow (the HTTP "
                "side and the scheduling)."
            )
        elif head and served and offline:
            split = (
                f" At c=32 the windows alone reach {head / offline:.2f}x offline `encode` "
                "(which sorts all its texts by length into full batches) and the HTTP side "
                f"keeps {served / head:.2f}x of that."
            )
        lines += [
            "",
            f"The server's engine alone ({ceiling.get('workers')} workers x "
            f"{ceiling.get('threads')} thread, its windows at each concurrency, no HTTP): "
            + "; ".join(parts)
            + "."
            + split,
        ]
        cut = ceiling.get("earlier_call_cost")
        if cut:
            lines[-1] += (
                f" Its windows cut with {cut.get('call_tokens')} tokens per batch call: "
                f"{fmt(cut.get('sentences_per_s'))} sentences/s, vs "
                f"{fmt(cut.get('earlier_sentences_per_s'))} with the earlier "
                f"{cut.get('earlier_call_tokens')} (interleaved)."
            )
    calls = rec.get("call_cost")
    if calls:
        lines += [
            "",
            "One model call on an inference worker's thread (`call_cost`: calls of "
            f"{', '.join(str(n) for n in calls['texts_per_call'])} copies of a "
            f"{calls['text_tokens']}-token text, the mix's median; a least-squares line "
            f"through their times, {', '.join(fmt(x, '.1f') for x in calls['call_ms'])} ms): "
            f"{fmt(calls['per_call_ms'], '.2f')} ms per call whatever its size, plus "
            f"{fmt(calls['per_token_us'], '.0f')} us a token. A call of one such text spends "
            f"{fmt(100 * calls['per_call_share_one_text'], '.0f')}% of its time on being a "
            f"call, one of {calls['texts_per_call'][-1]} "
            f"{fmt(100 * calls['per_call_share_largest'], '.0f')}%: small windows, cut into "
            "calls of a text or two, pay it over and over.",
        ]
    held = [
        f"{name} {fmt(level('bertrec', name).get('texts_per_window'), '.1f')}"
        for name in names
        if "texts_per_window" in level("bertrec", name)
    ]
    if held:
        lines += ["", "Texts per window as served (bertrec's metrics): " + "; ".join(held) + "."]
    path = rec.get("request_path")
    if path:
        c1 = level("bertrec", names[0]).get("p50_ms") if names else None
        share = 100 * (path["bertrec_us"] - path["naive_us"]) / (c1 * 1e3) if c1 else None
        lines += [
            "",
            "A request's path with the model call answered at once (`request_path_cost`: "
            "in-process, one request at a time, interleaved rounds): bertrec's batcher "
            f"{fmt(path.get('bertrec_us'), '.0f')} us, the naive server's "
            f"`asyncio.to_thread(encode)` {fmt(path.get('naive_us'), '.0f')} us per request "
            f"(bertrec's minus the naive one's: {fmt(share, '.1f')}% "
            f"of bertrec's p50 latency at {names[0] if names else 'c=1'}).",
        ]
    other = rec.get("engine_ceiling_bf16") or {}
    if other.get("levels") and ceiling.get("levels"):
        parts = []
        for name, row in other["levels"].items():
            mine = ceiling["levels"].get(name, {}).get("sentences_per_s")
            theirs = row.get("sentences_per_s")
            ratio = mine / theirs if mine and theirs else None
            parts.append(f"{name}: {fmt(theirs)} sentences/s ({ceiling.get('precision')} "
                         f"{fmt(ratio, '.2f')}x of it)")  # fmt: skip
        lines += [
            "",
            f"The same windows on OpenVINO bf16 (`--precision bf16`; the server's auto ran "
            f"{ceiling.get('backend')} {ceiling.get('precision')}): " + "; ".join(parts) + ".",
        ]
    soak = rec.get("checks", {}).get("soak")
    if soak:
        lines += [
            "",
            f"Soak: {fmt(soak.get('seconds'), '.0f')} s at concurrency "
            f"{soak.get('concurrency')}, {soak.get('errors')} errors, RSS "
            f"{fmt(soak.get('rss_mb_start'))} -> {fmt(soak.get('rss_mb_end'))} MB.",
        ]
    return lines


def gpu_section(rec: dict[str, Any], src: str) -> list[str]:
    """bench/gpu_check.py's record: fidelity and speed of the fp16 variant on CUDA, the
    engine on a server's windows, and the servers under load."""
    prov = rec.get("providers", {})
    enc = rec.get("encode", {})
    fid = enc.get("fidelity_vs_reference", {})
    # "bare_encode_1_ms": {"p50"} in the first records, bench.common.percentiles' since.
    bare = enc.get("bare_encode_1", {}).get("p50_ms", enc.get("bare_encode_1_ms", {}).get("p50"))
    lines = [
        "### On a GPU",
        "",
        f"`bash bench/gpu_check.sh` on a CUDA machine, record `{src}` ({_when(rec)}): "
        f"{prov.get('gpu', '?')}, ONNX Runtime {prov.get('onnxruntime', '?')}, "
        f"{prov.get('cpu_count', '?')} CPU cores; {enc.get('texts', '?')} texts of the serving "
        f"bench's mix. fp16 on CUDA against PyTorch fp32 (sentence-transformers on a CPU): "
        f"mean cosine {fmt(fid.get('mean_cos'), '.6f')}, min {fmt(fid.get('min_cos'), '.6f')}; "
        f"IO binding gives the same vectors: {enc.get('io_binding_identical')}; a bare "
        f"`encode([text])`: p50 {fmt(bare, '.2f')} ms.",
        "",
    ]
    rows = enc.get("rows", [])
    if rows:
        batches = list(dict.fromkeys(str(r["batch"]) for r in rows))
        table = []
        for io in (False, True):
            got = {str(r["batch"]): r for r in rows if r["io_binding"] is io}
            cells = [fmt(got.get(b, {}).get("sentences_per_s")) for b in batches]
            table.append([f"IO binding {'on' if io else 'off'}", *cells])
        heads = [b if b == "token budget" else f"batch {b}" for b in batches]
        lines += md_table(["offline sentences/s", *heads], table)
    cuts = enc.get("window_cuts", [])
    if cuts:
        shares = list(dict.fromkeys(r["call_tokens"] for r in cuts))
        table = []
        for size in dict.fromkeys(r["window_texts"] for r in cuts):
            got = {r["call_tokens"]: r for r in cuts if r["window_texts"] == size}
            cells = [fmt(got.get(c, {}).get("sentences_per_s")) for c in shares]
            table.append([f"windows of {size}", *cells])
        lines += [
            "",
            "The engine alone on a server's windows, each cut by `length_groups` at a per-call "
            "cost (tokens; one thread, sentences/s):",
            "",
            *md_table(["", *[f"call = {c}" for c in shares]], table),
        ]
    serve = rec.get("serve", {})
    systems = serve.get("systems", {})
    if systems:
        names = list(dict.fromkeys(r["level"] for rows in systems.values() for r in rows))
        base = {r["level"]: r for r in systems.get("naive", [])}
        table = []
        for name in names:
            row = [name]
            for system, rows in systems.items():
                r = next((x for x in rows if x["level"] == name), {})
                cell = f"{fmt(r.get('sentences_per_s'))} (p99 {fmt(r.get('p99_ms'), '.0f')})"
                b = base.get(name, {}).get("sentences_per_s")
                if system != "naive" and b and r.get("sentences_per_s"):
                    cell += f" {r['sentences_per_s'] / b:.2f}x"
                row.append(cell)
            table.append(row)
        same = serve.get("served_vs_encode", {}).get("min_cos")
        lines += [
            "",
            f"Served, closed-loop clients on loopback, {fmt(serve.get('duration_s'), '.0f')} s "
            "per level, interleaved (sentences/s, p99 ms, x the naive server); served vectors "
            f"against `encode`: min cosine {fmt(same, '.7f')}:",
            "",
            *md_table(["load", *systems], table),
        ]
    errors = rec.get("errors") or {}
    if errors:
        lines += ["", "Stages that failed: " + ", ".join(sorted(errors)) + "."]
    return lines


def _plot_serve(rec: dict[str, Any], plots: Path) -> list[Path]:
    from bench.serve_load import plot_serve  # imports the load generator (aiohttp)

    return plot_serve(rec, plots)


def generic_section(kind: str, rec: dict[str, Any], src: str) -> list[str]:
    """Key figures of a record whose layout this report does not know: its top-level
    numbers and the numeric columns of its first list of rows."""
    skip = {"machine", "versions", "settings", "threads", "written_utc", "kind", "quick"}
    figures = [
        f"{k}: {fmt(v, '.4g')}"
        for k, v in rec.items()
        if k not in skip and isinstance(v, (int, float)) and not isinstance(v, bool)
    ]
    lines = [f"### {kind}", "", f"record `{src}`" + (f": {'; '.join(figures)}" if figures else "")]
    table = next(
        (v for k, v in rec.items() if k not in skip and isinstance(v, list) and v
         and all(isinstance(r, dict) for r in v)), None)  # fmt: skip
    if table:
        cols = [
            k for k in table[0]
            if isinstance(table[0][k], (int, float, str)) and not isinstance(table[0][k], bool)
        ][:8]  # fmt: skip
        rows = [[fmt(r.get(c), ".4g") for c in cols] for r in table[:15]]
        lines += ["", *md_table(cols, rows)]
    return lines


SECTIONS: dict[str, Callable[[dict[str, Any], str], list[str]]] = {
    "throughput": throughput_section,
    "int8-frontier": frontier_section,
    "batching": batching_section,
    "batching-long": batching_section,
    "peak": peak_section,
    "startup": startup_section,
    "fusion": fusion_section,
    "scorer": scorer_section,
    "recommend-batch": recommend_batch_section,
    "recsys": recsys_section,
    "diversity": diversity_section,
    "cf-scale": cf_scale_section,
    "ray": ray_section,
    "serve-load": serve_section,
    "gpu-check": gpu_section,
}
PLOTS: dict[str, Callable[[dict[str, Any], Path], list[Path]]] = {
    "throughput": plot_throughput,
    "int8-frontier": plot_frontier,
    "scorer": plot_scorer,
    "serve-load": _plot_serve,
    "recsys": plot_hybrid,
}
COMMANDS = {
    "throughput": "python -m bench.throughput",
    "int8-frontier": "python -m bench.int8_frontier",
    "batching": "python -m bench.token_budget",
    "batching-long": "python -m bench.token_budget --workload long",
    "peak": "python -m bench.peak",
    "startup": "python -m bench.startup",
    "fusion": "python -m bench.attention_fusion",
    "scorer": "python -m bench.scorer",
    "recommend-batch": "python -m bench.recommend_batch",
    "recsys": "python -m bench.recsys_eval",
    "diversity": "python -m bench.diversity_frontier",
    "cf-scale": "python -m bench.cf_scale",
    "ray": "python -m bench.ray_overhead",
    "serve-load": "python -m bench.serve_load",
    "gpu-check": "bash bench/gpu_check.sh, on a CUDA machine",
}


SPREAD_SYSTEMS = ("bertrec-ort-int8", "bertrec-auto", "st-onnx-int8", "st-openvino")


def throughput_spread(results: Path) -> list[str]:
    """How the headline ratios moved over every full throughput record kept."""
    per: dict[str, list[float]] = {}
    recs = 0
    for path in sorted(results.glob("throughput-*.json")):
        try:
            rec = json.loads(path.read_text(encoding="utf-8"))
            systems = rec["shapes"]["minilm"]["systems"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if rec.get("quick"):
            continue
        recs += 1
        for name in SPREAD_SYSTEMS:
            ratio = systems.get(name, {}).get("ratio_best_to_st_fp32")
            if isinstance(ratio, (int, float)):
                per.setdefault(name, []).append(float(ratio))
    if recs < 2:
        return []
    parts = [f"`{name}` {min(v):.2f}–{max(v):.2f}×" for name, v in per.items() if v]
    return [
        "",
        f"Run-to-run spread, best throughput × ST fp32 over the {recs} full runs in "
        f"`bench/results/` (some with earlier bertrec versions): " + ", ".join(parts) + ".",
    ]


def serve_spread(results: Path) -> list[str]:
    """The two throughput lines of the serving acceptance in every full serve-load record
    kept: one record is one moment of a shared machine, and the figures move between
    records more than within one."""
    rows = []
    for path in sorted(results.glob("serve-load-*.json")):
        try:
            rec = json.loads(path.read_text(encoding="utf-8"))
            offline, naive = rec["acceptance"]["c32_vs_offline"], rec["acceptance"]["vs_naive"]
            c32 = float(offline["value"])
            slowest = min(float(v) for v in naive["value"].values())
            verdicts = (bool(offline["met"]), bool(naive["met"]))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
        if rec.get("quick"):
            continue
        stamp = path.stem.removeprefix("serve-load-")
        rounds = int(rec.get("settings", {}).get("rounds", 1))
        rows.append((stamp, rounds, c32, slowest, verdicts))
    if len(rows) < 2:
        return []
    parts = [
        f"{stamp}{f' ({rounds} rounds)' if rounds > 1 else ''}: {c32:.2f}x / {slowest:.2f}x"
        for stamp, rounds, c32, slowest, _ in rows
    ]
    met = sum(m[0] for *_, m in rows)
    naive_met = sum(m[1] for *_, m in rows)
    both = sum(m[0] and m[1] for *_, m in rows)
    return [
        "",
        "Every full record kept (c=32 against offline `encode` / the slowest level against "
        "the naive server; earlier ones with earlier bertrec versions and one run per level): "
        + "; ".join(parts)
        + f". Of these {len(rows)}, c=32 reached 0.75x offline in {met}, every level matched "
        f"or beat the naive server in {naive_met}, and both held in {both}.",
    ]


def build(results: Path, plots: Path, link_base: Path, quick: bool) -> tuple[str, list[Path]]:
    """The results section (markdown) and the plots written for it."""
    import matplotlib

    matplotlib.use("Agg")
    plots.mkdir(parents=True, exist_ok=True)
    body: list[str] = []
    written: list[Path] = []
    missing = []
    for kind in KINDS:
        found = latest_record(kind, results, include_quick=quick)
        if found is None:
            missing.append(kind)
            continue
        path, rec = found
        src = _rel(path, link_base)
        try:
            section = SECTIONS.get(kind, lambda r, s, k=kind: generic_section(k, r, s))(rec, src)
        except Exception as exc:  # a record from another script version: say so, go on
            section = [f"### {kind}", "", f"record `{src}` could not be summarised: {exc!r}"]
        try:
            made = PLOTS[kind](rec, plots) if kind in PLOTS else []
        except Exception as exc:
            made = []
            section += ["", f"(plot failed: {exc!r})"]
        if kind == "throughput":
            section += throughput_spread(results)
        if kind == "serve-load":
            section += serve_spread(results)
        written += made
        body += [*section, ""]
        body += [f"![{p.stem}]({_rel(p, link_base)})" for p in made]
        if made:
            body.append("")
    if missing:
        body.append(
            "Not yet recorded: " + ", ".join(f"{k} (`{COMMANDS[k]}`)" for k in missing) + "."
        )
        body.append("")
    body.append(f"Regenerate with `{REGENERATE}`.")
    return "\n".join(body).strip() + "\n", written


def rewrite_readme(readme: Path, section: str) -> bool:
    """Replace what lies between the markers; False (nothing written) without them."""
    if not readme.is_file():
        return False
    doc = readme.read_text(encoding="utf-8")
    if START not in doc or END not in doc or doc.index(START) > doc.index(END):
        return False
    head, rest = doc.split(START, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{START}\n{section}{END}{tail}"
    if new != doc:
        atomic_write_bytes(readme, new.encode("utf-8"))
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="CI smoke: temp dir, README untouched")
    p.add_argument("--results", type=Path, default=RESULTS_DIR, help="where the records are")
    args = p.parse_args(argv)
    if args.quick:
        out = Path(tempfile.mkdtemp(prefix="bertrec-report-"))
        section, plots = build(args.results, out / "plots", out, quick=True)
        (out / "results-section.md").write_text(section, encoding="utf-8")
        print(section)
        print(f"quick report: {out} ({len(plots)} plots); README.md left alone")
        return 0
    section, plots = build(args.results, args.results / "plots", REPO, quick=False)
    if rewrite_readme(README, section):
        print(f"README.md results section rewritten ({len(plots)} plots in "
              f"{_rel(args.results / 'plots', REPO)})")  # fmt: skip
    else:
        print(f"README.md has no {START} / {END} markers; the section:\n")
        print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
