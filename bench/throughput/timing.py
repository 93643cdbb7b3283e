"""The timed phases of one model shape: the interleaved sweep of batch settings, the final
runs, batch-1 latency and fidelity, and the figures the record keeps of them."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bench.common import TextMix, log, median, percentiles
from bench.peak import (
    ModelShape,
    budget_batches,
    input_order_batches,
    share_of_peak,
    sorted_batches,
)
from bench.throughput.base import Config, Run, System, error_text
from bench.throughput.settings import REFERENCE, Settings, ShapeSettings


class Bench:
    """Runs the phases for one model shape and collects every figure."""

    def __init__(
        self,
        shape: ShapeSettings,
        settings: Settings,
        mix: TextMix,
        tokens: NDArray[np.int64],
        full_tokens: NDArray[np.int64] | None = None,
        model: ModelShape | None = None,
        peaks: dict[str, Any] | None = None,
    ) -> None:
        self.shape = shape
        self.settings = settings
        self.mix = mix
        self.tokens = tokens  # as every system truncates (the shape's max_length)
        self.full_tokens = tokens if full_tokens is None else full_tokens  # untruncated
        self.model = model
        self.peaks = peaks or {}
        self.common_batch = shape.common_batch or settings.common_batch
        self.failed: dict[str, dict[str, Any]] = {}
        self.runs: dict[tuple[str, str, str], list[Run]] = {}
        self.embeddings: dict[str, NDArray[np.float32]] = {}
        self.latencies: dict[str, list[float]] = {}
        self.systems: list[System] = []

    def _call(self, system: System, what: str, fn: Callable[[], Any]) -> Any:
        """Run one step of a system; a failure drops the system, not the run."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return fn()
        except Exception as exc:
            self.failed[system.name] = {"status": "failed", "stage": what, "error": error_text(exc)}
            log(f"  {system.name}: FAILED during {what}: {error_text(exc)[:300]}")
            self.systems = [s for s in self.systems if s is not system]
            system.close()
            return None

    def _timed(self, system: System, phase: str, cfg: Config, stop: int, keep: bool) -> None:
        run = self._call(system, f"{phase} {cfg.label}", lambda: system.encode(0, stop, cfg, keep))
        if run is not None:
            self.runs.setdefault((system.name, phase, cfg.label), []).append(run)
            if run.embeddings is not None:
                self.embeddings[system.name] = run.embeddings

    def warm(self, system: System, cfg: Config) -> None:
        w = min(self.shape.warmup_texts, self.shape.texts)
        self._call(system, f"warm-up {cfg.label}", lambda: system.encode(0, w, cfg))

    def run(self, systems: list[System]) -> None:
        self.systems = list(systems)
        for s in list(self.systems):
            self._call(s, "prepare", partial(s.prepare, self.mix.texts[: self.shape.texts]))
        t0 = time.perf_counter()
        # Sweep: setting i of every system, then setting i+1 ...; one warm-up before each
        # setting's first run. The second round goes through the settings backwards, and a
        # setting's figure is its faster run: load from other processes that comes or goes
        # during the sweep then cannot favour the settings that happened to run first.
        sweep_n = min(self.shape.sweep_texts, self.shape.texts)
        k = max((len(s.configs) for s in self.systems), default=0)
        for rnd in range(self.settings.sweep_rounds):
            for i in range(k) if rnd % 2 == 0 else reversed(range(k)):
                for s in list(self.systems):
                    if self.swept(s) and i < len(s.configs):
                        if rnd == 0:
                            self.warm(s, s.configs[i])
                        self._timed(s, "sweep", s.configs[i], sweep_n, keep=False)
        if any(self.swept(s) for s in self.systems):
            log(f"  sweep done in {time.perf_counter() - t0:.0f}s")
        t0 = time.perf_counter()
        finals = {s.name: self.final_configs(s) for s in self.systems}
        for s in list(self.systems):
            if not self.swept(s):  # not warmed up yet
                for cfg in finals[s.name]:
                    self.warm(s, cfg)
        n_time = min(self.shape.time_texts, self.shape.texts)
        # When the timed runs cover the whole mix, the last one gives the fidelity rows.
        reuse = n_time == self.shape.texts
        for r in range(self.settings.repeats):
            last = r == self.settings.repeats - 1
            for s in list(self.systems):
                for cfg in finals[s.name]:
                    keep = self.shape.fidelity and reuse and last and cfg == s.common
                    self._timed(s, "final", cfg, n_time, keep)
        log(f"  final runs done in {time.perf_counter() - t0:.0f}s")
        if self.shape.fidelity and not reuse:
            t0 = time.perf_counter()
            for s in list(self.systems):
                self._timed(s, "fidelity", s.common, self.shape.texts, keep=True)
            log(f"  fidelity runs done in {time.perf_counter() - t0:.0f}s")
        if self.shape.latency_texts:
            t0 = time.perf_counter()
            self.latency()
            log(f"  latency done in {time.perf_counter() - t0:.0f}s")

    @staticmethod
    def swept(system: System) -> bool:
        """Whether a system has more candidates than the final runs take anyway."""
        return len([c for c in system.configs if c != system.common]) > 1

    def final_configs(self, system: System) -> list[Config]:
        """The best sweep setting and the common one (once if they are the same); every
        setting when there was nothing to sweep."""
        if not self.swept(system):
            return list(dict.fromkeys([*system.configs, system.common]))
        best = self.best_sweep(system)
        return list(dict.fromkeys([c for c in (best, system.common) if c is not None]))

    def best_sweep(self, system: System) -> Config | None:
        if not self.swept(system):
            return None
        timed = [(c, self.runs.get((system.name, "sweep", c.label))) for c in system.configs]
        scored = [(min(r.seconds for r in runs), c) for c, runs in timed if runs]
        return min(scored, key=lambda x: x[0])[1] if scored else None

    def latency(self) -> None:
        n = self.shape.texts
        idx = np.linspace(0, n - 1, min(self.shape.latency_texts, n)).astype(int).tolist()
        blocks = np.array_split(np.asarray(idx), max(1, self.settings.repeats))
        for s in list(self.systems):
            self._call(s, "latency warm-up", partial(s.latency, idx[:4]))
        for block in blocks:  # interleaved in blocks: A B C ... A B C ...
            for s in list(self.systems):
                t = self._call(s, "latency", partial(s.latency, block.tolist()))
                if t is not None:
                    self.latencies.setdefault(s.name, []).extend(t)

    # -- figures ------------------------------------------------------------------------

    def _figure(self, name: str, phase: str, cfg: Config, n: int) -> dict[str, Any] | None:
        """Figures of one system, phase and setting: from the median run, or in the sweep
        from the fastest (see ``run``)."""
        runs = self.runs.get((name, phase, cfg.label))
        if not runs:
            return None
        secs = [r.seconds for r in runs]
        med = min(secs) if phase == "sweep" else median(secs)
        toks = int(self.tokens[:n].sum())
        util = median([r.cpu_s / max(r.seconds * self.settings.threads, 1e-9) for r in runs])
        return {
            "config": cfg.label,
            "batch_size": cfg.batch_size,
            "max_batch_tokens": cfg.max_batch_tokens,
            "texts": n,
            "tokens": toks,
            "repeats": len(secs),
            "seconds": [round(x, 4) for x in secs],
            "median_s" if phase != "sweep" else "min_s": round(med, 4),
            "sentences_per_s": n / med,
            "tokens_per_s": toks / med,
            # Process CPU time / (wall x threads): well below 1 means it waited (on other
            # processes on the machine, or on Python between batches).
            "cpu_util": round(util, 3),
        }

    def figures(self, all_systems: list[System]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        sweep_n = min(self.shape.sweep_texts, self.shape.texts)
        for s in all_systems:
            entry: dict[str, Any] = {"label": s.label, "info": s.info, "status": "ok"}
            if s.name in self.failed:
                entry.update(self.failed[s.name])
            sweep = [self._figure(s.name, "sweep", c, sweep_n) for c in s.configs]
            entry["sweep"] = [f for f in sweep if f]
            best = self.best_sweep(s) if s.name not in self.failed else None
            n_time = min(self.shape.time_texts, self.shape.texts)
            entry["final"] = [
                f for c in s.configs + [s.common]
                if (f := self._figure(s.name, "final", c, n_time))
            ]  # fmt: skip
            fid_run = self._figure(s.name, "fidelity", s.common, self.shape.texts)
            if fid_run:
                entry["fidelity_run"] = fid_run  # one pass, for information only
            entry["final"] = list({f["config"]: f for f in entry["final"]}.values())
            finals = {f["config"]: f for f in entry["final"]}
            if finals:
                # The sweep (one short run each) picks the candidate; the final runs (median
                # of repeats on more texts) decide between it and batch 32.
                entry["best"] = max(finals.values(), key=lambda f: f["sentences_per_s"])
            if best is not None:
                entry["best_in_sweep"] = best.label
            if s.common.label in finals:
                entry["common"] = finals[s.common.label]
            if s.name in self.latencies:
                lat = self.latencies[s.name]
                entry["latency_batch1"] = {
                    **percentiles(lat),
                    "sentences_per_s": len(lat) / sum(lat),
                }
            for fig in [*entry["sweep"], *entry["final"]]:
                self._add_flops(s, fig)
            out[s.name] = entry
        ref = out.get(REFERENCE, {})
        ref_emb = self.embeddings.get(REFERENCE)
        for name, entry in out.items():
            for key in ("best", "common"):
                if key in entry and key in ref:
                    entry[f"ratio_{key}_to_st_fp32"] = (
                        entry[key]["sentences_per_s"] / ref[key]["sentences_per_s"]
                    )
            if self.shape.fidelity and name in self.embeddings and ref_emb is not None:
                from bertrec.runtime.fidelity import fidelity

                entry["fidelity"] = {
                    **fidelity(self.embeddings[name], ref_emb),
                    "reference": f"{REFERENCE} (normalized), batch {self.common_batch}",
                    "config": entry["common"]["config"] if "common" in entry else None,
                }
        for name, fail in self.failed.items():
            out.setdefault(name, {"label": name, "status": "failed", **fail})
        fastest = fastest_peer(out)
        if fastest is not None:
            top = out[fastest]["best"]["sentences_per_s"]
            for name, entry in out.items():
                if name.startswith("bertrec") and "best" in entry:
                    entry["ratio_best_to_fastest_peer"] = entry["best"]["sentences_per_s"] / top
        return out

    def _add_flops(self, system: System, fig: dict[str, Any]) -> None:
        """GFLOP/s of a figure (bench.peak's model: the real tokens, and the padded batches
        as this system cuts them) and their share of the machine's peak for its precision."""
        if self.model is None:
            return
        n = int(fig["texts"])
        limit = int(system.info.get("max_length") or system.info.get("max_seq_length") or 0) or int(
            self.tokens.max(initial=1)
        )
        lengths = np.minimum(self.full_tokens[:n], limit)
        bs = fig.get("batch_size") or self.common_batch
        if system.batching == "budget":
            budget = fig.get("max_batch_tokens") or system.info.get("default_max_batch_tokens")
            batches = budget_batches(lengths, int(budget or 1024), fig.get("batch_size"))
        elif system.batching == "input-order":
            batches = input_order_batches(lengths, int(bs))
        else:
            batches = sorted_batches(lengths, int(bs))
        secs = float(fig.get("median_s") or fig.get("min_s") or 0.0)
        if secs <= 0:
            return
        useful = self.model.useful_flops(self.tokens[:n])
        run = self.model.run_flops(batches)
        precision = str(system.info.get("precision", "fp32"))
        fig["gflops_per_s"] = useful / secs / 1e9
        fig["gflops_as_run_per_s"] = run / secs / 1e9
        fig["padding_flops_ratio"] = run / useful if useful else None
        fig["precision"] = precision
        fig["share_of_peak"] = share_of_peak(fig["gflops_per_s"], precision, self.peaks)
        fig["share_of_peak_as_run"] = share_of_peak(
            fig["gflops_as_run_per_s"], precision, self.peaks
        )


def fastest_peer(figures: dict[str, Any]) -> str | None:
    """The system that is not bertrec with the highest best throughput (None: no peer ran)."""
    peers = [(e["best"]["sentences_per_s"], n) for n, e in figures.items()
             if not n.startswith("bertrec") and "best" in e]  # fmt: skip
    return max(peers)[1] if peers else None


def acceptance(figures: dict[str, Any]) -> dict[str, Any]:
    """The issue's headline ratios for one shape, read off its figures (None: not run)."""

    def best(name: str, key: str) -> Any:
        return figures.get(name, {}).get("best", {}).get(key)

    auto = figures.get("bertrec-auto", {})
    out: dict[str, Any] = {
        "auto": f"{auto.get('info', {}).get('backend')} {auto.get('info', {}).get('precision')}",
        "auto_x_st_fp32": auto.get("ratio_best_to_st_fp32"),
        "fastest_peer": fastest_peer(figures),
        "auto_x_fastest_peer": auto.get("ratio_best_to_fastest_peer"),
        "auto_share_of_peak": best("bertrec-auto", "share_of_peak"),
    }
    for name in ("bertrec-ort-int8", "bertrec-openvino-bf16"):
        if best(name, "share_of_peak") is not None:
            out[f"{name}_share_of_peak"] = best(name, "share_of_peak")
    return out


def token_counts(
    texts: Sequence[str], tokenizer_json: Path, max_length: int | None
) -> NDArray[np.int64]:
    """Tokens per text as every system sees them: with [CLS]/[SEP], truncated (None: not)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    tok.no_padding()
    if max_length is None:
        tok.no_truncation()
    else:
        tok.enable_truncation(max_length=max_length)
    return np.asarray([len(e.ids) for e in tok.encode_batch(list(texts))], dtype=np.int64)
