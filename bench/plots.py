"""The README's plots: for each record kind that has some, a function that draws PNGs from
a record into a folder and returns their paths (``bench.report`` calls them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _xy(points: list[tuple[float, float]]) -> tuple[list[float], list[float]]:
    return [x for x, _ in points], [y for _, y in points]


def _save(fig: Any, path: Path) -> Path:
    """Write a matplotlib figure as PNG and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_throughput(rec: dict[str, Any], plots: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    out = []
    for name, shape in rec["shapes"].items():
        fig, (left, right) = plt.subplots(1, 2, figsize=(13, 6.2))
        cmap = plt.get_cmap("tab20")
        colors = [cmap(i) for i in range(20)]
        for n, (sys_name, e) in enumerate(shape["systems"].items()):
            # One colour per system in both panels; bertrec solid, the peers dashed.
            style = {
                "color": colors[(2 * n) % 20 if n < 10 else (2 * n + 1) % 20],
                "linestyle": "-" if sys_name.startswith("bertrec") else "--",
                "linewidth": 2.0 if sys_name.startswith("bertrec") else 1.3,
                "label": e.get("label", sys_name),
            }
            # Sweep figures where there was a sweep; else the final runs' settings.
            figs = e.get("sweep") or e.get("final", [])
            rows = [f for f in figs if f.get("batch_size")]
            pts = sorted((f["batch_size"], f["sentences_per_s"]) for f in rows)
            lat = e.get("latency_batch1")
            if lat and lat.get("sentences_per_s"):
                pts = [(1, lat["sentences_per_s"]), *pts]
            if pts:
                left.plot(*_xy(pts), marker="o", **style)
            budget = sorted(
                (f["max_batch_tokens"], f["sentences_per_s"])
                for f in figs
                if f.get("max_batch_tokens") and not f.get("batch_size")
            )
            if budget:
                right.plot(*_xy(budget), marker="s", **style)
        st = shape["settings"]
        swept = any(e.get("sweep") for e in shape["systems"].values())
        what = (
            f"sweep: {st['sweep_texts']} texts, best of 2"
            if swept
            else f"{st.get('time_texts', st['texts'])} texts, "
            f"median of {rec['settings']['repeats']}"
        )
        left.set(
            xscale="log",
            xlabel="rows per batch (batch 1: one text per call)",
            ylabel="sentences/s",
            title=f"{name}: throughput vs batch size ({what})",
        )
        left.set_xscale("log", base=2)
        right.set(
            xlabel="bertrec max_batch_tokens (padded tokens per batch)",
            ylabel="sentences/s",
            title=f"{name}: bertrec token budget ({what})",
        )
        right.set_xscale("log", base=2)
        for ax in (left, right):
            xs = sorted({x for line in ax.lines for x in line.get_xdata()})
            if xs:
                ax.set_xticks(xs, [f"{x:g}" for x in xs])
            ax.grid(True, alpha=0.3)
            ax.set_ylim(bottom=0)
        handles, labels = left.get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
        fig.tight_layout(rect=(0, 0.13, 1, 1))
        path = plots / f"throughput-{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        out.append(path)
    return out


def plot_frontier(rec: dict[str, Any], plots: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    rows = [r for r in rec.get("rows", []) if "sentences_per_s" in r and "min_cos" in r]
    if not rows:
        return []
    fig, ax = plt.subplots(figsize=(7, 5))
    for r in rows:
        ax.scatter(r["sentences_per_s"], r["min_cos"], marker="o")
        ax.scatter(r["sentences_per_s"], r.get("mean_cos", r["min_cos"]), marker="x", c="gray")
        ax.annotate(str(r.get("recipe")), (r["sentences_per_s"], r["min_cos"]), fontsize=7,
                    xytext=(4, 4), textcoords="offset points")  # fmt: skip
    ax.set(xlabel="sentences/s", ylabel="cosine vs ST fp32 (o: min, x: mean)",
           title="int8 recipes: speed vs accuracy")  # fmt: skip
    ax.grid(True, alpha=0.3)
    return [_save(fig, plots / "int8-frontier.png")]


def plot_scorer(rec: dict[str, Any], plots: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    results = rec.get("results", [])
    if not results:
        return []
    fig, ax = plt.subplots(figsize=(7, 5))
    methods = sorted({m for r in results for m in r.get("median_s", {})})
    for nq in sorted({r.get("queries") for r in results}):
        for method in methods:
            pts = sorted(
                (r["n"], r["median_s"][method] * 1e3)
                for r in results
                if r.get("queries") == nq and method in r.get("median_s", {})
            )
            if pts:
                ax.plot(*_xy(pts), marker="o", label=f"{method}, {nq} queries")
    ax.set(xscale="log", yscale="log", xlabel="catalog size (items)", ylabel="ms per call",
           title="top-k ranking time vs catalog size")  # fmt: skip
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    return [_save(fig, plots / "scorer.png")]


def plot_hybrid(rec: dict[str, Any], plots: Path) -> list[Path]:
    """NDCG@10 of every method on each protocol of the hybrid evaluation (recsys record)."""
    import matplotlib.pyplot as plt

    hybrid = rec.get("hybrid")
    if not isinstance(hybrid, dict) or not hybrid.get("test"):
        return []
    protocols = list(hybrid["test"])
    methods = list(dict.fromkeys(m for p in protocols for m in hybrid["test"][p]))
    fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.8 / len(methods)
    for i, method in enumerate(methods):
        xs = [j + (i - (len(methods) - 1) / 2) * width for j in range(len(protocols))]
        ys = [hybrid["test"][p].get(method, {}).get("ndcg", 0.0) for p in protocols]
        ax.bar(xs, ys, width=width, label=method)
    users = hybrid.get("users", {}).get("test", {})
    ax.set_xticks(range(len(protocols)))
    ax.set_xticklabels([f"{p.replace('_', ' ')} ({users.get(p, '?')} users)" for p in protocols])
    ax.set(ylabel="NDCG@10 (test)", title="MovieLens: hybrid against its parts and baselines")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=3)
    return [_save(fig, plots / "recsys-hybrid.png")]
