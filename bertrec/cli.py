"""The ``bertrec`` command. Heavy modules (torch, transformers, onnx, pyarrow, Ray) load
inside the subcommand that needs them, so ``bertrec --help`` and runtime commands start
fast. Every failure is one line on stderr and exit status 2."""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from bertrec import __version__
from bertrec.errors import BertrecError, ProviderError

# Which extra brings a module that a subcommand imports on first use.
EXTRAS = {
    "torch": "export",
    "transformers": "export",
    "onnx": "export",
    "optimum": "export",
    "pyarrow": "batch",
    "ray": "ray",
    "openvino": "openvino",
    "starlette": "serve",
    "uvicorn": "serve",
    "orjson": "serve",
    "prometheus_client": "serve",
    "matplotlib": "plot",
}


def _need(extra: str, *modules: str) -> None:
    """A one-line ProviderError naming the extra when one of its modules is missing, before
    anything half-imports (transformers without torch prints its own warnings)."""
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # ValueError: blocked in sys.modules
            found = False
        if not found:
            raise ProviderError(f"{name} is not installed; pip install 'bertrec[{extra}]'")


def _export(args: argparse.Namespace) -> int:
    _need("export", "torch", "transformers", "onnx")
    from bertrec.export import export_model
    from bertrec.runtime.texts import read_text_file

    out = export_model(
        args.source,
        args.output_dir,
        precision=args.precision,
        pooling=args.pooling,
        normalize=args.normalize,
        max_length=args.max_length,
        opset=args.opset,
        overwrite=args.overwrite,
        progress=_progress(args),
        calibration_texts=read_text_file(args.calibration) if args.calibration else None,
    )
    _print_manifest(str(out))
    return 0


def _quantize(args: argparse.Namespace) -> int:
    _need("export", "onnx")
    from bertrec.quantize import add_variant
    from bertrec.runtime.texts import read_text_file

    add_variant(
        args.model_dir,
        args.precision,
        calibration_texts=read_text_file(args.calibration) if args.calibration else None,
    )
    _print_manifest(args.model_dir)
    return 0


def _print_manifest(model_dir: str, verified: bool = False) -> None:
    from bertrec.runtime.manifest import read_manifest

    m = read_manifest(model_dir)
    print(
        f"{model_dir}: {m.model_type} dim={m.dim} pooling={m.pooling} "
        f"normalize={m.normalize} max_length={m.max_length}"
    )
    for v in m.variants.values():
        mark = " sha256 ok" if verified else ""
        print(f"  {v.file:18s} {v.size_bytes / 1e6:8.1f} MB{mark}  {_figures(v.validation)}")
    for name, check in m.runtime_checks.items():
        print(f"  {name:18s} {'':11s}  {_figures(check)}")
    if m.prompts:
        default = f" (default {m.default_prompt_name!r})" if m.default_prompt_name else ""
        print(f"  prompts: {', '.join(sorted(m.prompts))}{default}")


def _figures(val: dict[str, object]) -> str:
    """The fidelity figures a manifest recorded, whichever of them are there."""
    shown = [
        f"{key}={val[key]:.6f}"
        for key in ("min_cos", "mean_cos", "p1_cos")
        if isinstance(val.get(key), (int, float))
    ]
    if not shown:
        return str(val.get("skipped", "not validated"))
    return " ".join(shown) + f" vs {val.get('reference', '?')}"


def _info(args: argparse.Namespace) -> int:
    if args.verify:
        from bertrec.runtime.manifest import read_manifest, verify_variant

        for variant in read_manifest(args.model_dir).variants.values():
            verify_variant(args.model_dir, variant)  # FileFormatError names a bad file
    _print_manifest(args.model_dir, verified=args.verify)
    return 0


def _check(args: argparse.Namespace) -> int:
    from bertrec.quantize.checks import check_model

    check_model(args.model_dir)
    _print_manifest(args.model_dir)
    return 0


def _demo(args: argparse.Namespace) -> int:
    # The demo is an example of the repository (examples/movielens), not of the installed
    # library: it runs from a checkout, where the repository root is importable.
    try:
        from examples.movielens.demo import run_demo
    except ImportError as exc:
        raise ProviderError(
            "bertrec demo runs from a checkout of the bertrec repository: run `make demo` or "
            "`python -m examples.movielens --data DIR` in its root"
        ) from exc
    return run_demo(data_dir=args.data, model_dir=args.model, users=args.users, plot=args.plot)


# -- batch jobs: bertrec.jobs (pyarrow; Ray only with --ray) --------------------------------


def _device(name: str) -> str:
    """``auto`` resolved once, here: every worker of a job must run the same device."""
    if name != "auto":
        return name
    from bertrec.runtime.providers import cuda_usable

    return "cuda" if cuda_usable() else "cpu"


def _encode_job(args: argparse.Namespace) -> int:
    from bertrec.jobs import encode_dataset

    id_column = args.id_column
    if id_column is None:
        from bertrec.jobs.readers import input_columns, input_format

        path = Path(args.input)
        found = path.is_file() and "id" in input_columns(path, input_format(path))
        id_column = "id" if found else None
        if not found and path.is_file():
            print(
                f"bertrec: {args.input!r} has no 'id' column; numbering the rows", file=sys.stderr
            )
    result = encode_dataset(
        args.input,
        args.output,
        args.model,
        text_column=args.text_column,
        id_column=id_column,
        precision=args.precision,
        device=_device(args.device),
        backend=args.backend,
        ray_address=args.ray,
        workers=args.workers,
        cpus_per_worker=args.cpus_per_worker,
        shard_rows=args.shard_rows,
        progress=_progress(args),
    )
    _say_result(result, args.input)
    return 0


def _recommend_job(args: argparse.Namespace) -> int:
    from bertrec.jobs import recommend_dataset

    result = recommend_dataset(
        args.users,
        args.output,
        args.store,
        k=args.k,
        exclude_seen=args.exclude_seen,
        diversity=args.diversity,
        on_unknown=args.on_unknown,
        user_column=args.user_column,
        history_column=args.history_column,
        ray_address=args.ray,
        workers=args.workers,
        cpus_per_worker=args.cpus_per_worker,
        shard_rows=args.shard_rows,
        progress=_progress(args),
    )
    _say_result(result, args.users)
    return 0


def _say_result(result: object, source: str) -> None:
    print(result.summary())  # type: ignore[attr-defined]
    if getattr(result, "rows", 1) == 0:
        print(f"bertrec: warning: {source!r} has no rows; the output is empty", file=sys.stderr)


def _progress(args: argparse.Namespace) -> bool:
    """Progress bars: on by default where stderr is a terminal, off with --no-progress."""
    if getattr(args, "no_progress", False):
        return False
    if getattr(args, "progress", False):
        return True
    return sys.stderr.isatty()


# -- the parser -----------------------------------------------------------------------------


class _Help(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows each option's default and keeps descriptions as written."""


def _common() -> argparse.ArgumentParser:
    # -v works before or after the subcommand.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log details"
    )
    return common


def _add_progress_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--progress", action="store_true", help="always show progress bars (default: on a TTY)"
    )
    group.add_argument("--no-progress", action="store_true", help="never show progress bars")


def _add_batch_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ray",
        nargs="?",
        const="local",
        default=None,
        metavar="ADDRESS",
        help="run on Ray: a cluster address (auto, ray://HEAD:10001); with no address, "
        "RAY_ADDRESS or a new local Ray. Put it after the positional arguments",
    )
    parser.add_argument("--workers", type=int, default=None, help="Ray actors (default: CPUs)")
    parser.add_argument("--cpus-per-worker", type=int, default=1, help="CPUs per Ray actor")
    parser.add_argument(
        "--shard-rows", type=int, default=4096, help="rows per shard (the unit of resume)"
    )
    _add_progress_options(parser)


def _add_batch_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = _common()
    b = sub.add_parser(
        "encode",
        parents=[common],
        formatter_class=_Help,
        help="embed a Parquet/CSV/JSONL file of texts into a folder of Parquet parts",
        description="Resumable: rerun the same command after a crash to finish it.",
    )
    b.add_argument("input", help="file of texts: .parquet, .csv (with header) or .jsonl")
    b.add_argument("output", help="output folder: part-NNNNN.parquet, _rejects/, _SUCCESS")
    b.add_argument("--model", required=True, help="bertrec model directory")
    b.add_argument("--text-column", default="text", help="column with the texts")
    b.add_argument(
        "--id-column",
        default=None,
        help="column with each row's id (default: 'id' when the input has it, else the row "
        "numbers)",
    )
    b.add_argument(
        "--precision", default="auto", help="fp32, int8, fp16, bf16 or auto (see bertrec info)"
    )
    b.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="auto: CUDA when it works here, else the CPU (resolved once for every worker)",
    )
    b.add_argument(
        "--backend",
        choices=("auto", "onnxruntime", "openvino"),
        default="auto",
        help="the Encoder's backend (see bertrec info for the recorded bf16 check)",
    )
    _add_batch_options(b)
    b.set_defaults(func=_encode_job)

    r = sub.add_parser(
        "recommend-batch",
        parents=[common],
        formatter_class=_Help,
        help="top-k items for every user of a Parquet/JSONL file of histories",
        description="Users file: one row per user with a user id and a list of item ids.",
    )
    r.add_argument("users", help="users file: .parquet or .jsonl")
    r.add_argument("output", help="output folder: part-NNNNN.parquet, _rejects/, _SUCCESS")
    r.add_argument("--store", required=True, help="directory written by Recommender.save")
    r.add_argument("--k", type=int, default=10, help="items per user")
    r.add_argument("--user-column", default="user_id", help="column with the user ids")
    r.add_argument("--history-column", default="history", help="column with item-id lists")
    r.add_argument(
        "--exclude-seen",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="leave out items already in the history",
    )
    r.add_argument(
        "--diversity",
        type=float,
        default=0.0,
        help="diversity re-ranking weight in [0, 1] (0.7 is the MovieLens-tuned trade)",
    )
    r.add_argument(
        "--on-unknown",
        choices=("error", "skip"),
        default="error",
        help="history ids not in the catalog: reject the user, or leave the ids out",
    )
    _add_batch_options(r)
    r.set_defaults(func=_recommend_job)


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    p = argparse.ArgumentParser(
        prog="bertrec", description=__doc__, parents=[common], formatter_class=_Help
    )
    p.add_argument("--version", action="version", version=f"bertrec {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help: str, **kw: object) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], formatter_class=_Help, help=help, **kw)  # type: ignore[arg-type]

    e = add("export", "export a checkpoint to a validated ONNX model directory")
    e.add_argument("source", help="Hugging Face / sentence-transformers directory or Hub id")
    e.add_argument("output_dir", help="model directory to create")
    e.add_argument("--precision", default="fp32,int8", help="comma list of fp32, int8, fp16")
    e.add_argument(
        "--pooling",
        choices=("mean", "cls", "max"),
        default=None,
        help="pooling (default: the sentence-transformers config's, else mean)",
    )
    e.add_argument(
        "--normalize",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="L2-normalize in the graph (default: the source's, else on)",
    )
    e.add_argument(
        "--max-length", type=int, default=None, help="token limit (default: the source's)"
    )
    e.add_argument("--opset", type=int, default=17, help="ONNX opset (14-21)")
    e.add_argument("--overwrite", action="store_true", help="replace an existing output_dir")
    e.add_argument("--calibration", help="UTF-8 file, one sentence a line, for the int8 gate")
    _add_progress_options(e)
    e.set_defaults(func=_export)

    q = add("quantize", "add an int8 or fp16 variant to a model directory")
    q.add_argument("model_dir", help="a bertrec model directory")
    q.add_argument("--precision", choices=("int8", "fp16"), required=True, help="variant")
    q.add_argument("--calibration", help="UTF-8 file, one sentence a line")
    q.set_defaults(func=_quantize)

    i = add("info", "print a model directory's manifest summary")
    i.add_argument("model_dir", help="a bertrec model directory")
    i.add_argument("--verify", action="store_true", help="check every file's sha256")
    i.set_defaults(func=_info)

    c = add(
        "check",
        "measure OpenVINO bf16 against fp32 and record it in the manifest",
        description="Encoder(model_dir) picks bf16 automatically only where this is recorded "
        "and close to fp32; export runs it where the machine can.",
    )
    c.add_argument("model_dir", help="a bertrec model directory")
    c.set_defaults(func=_check)

    d = add("demo", "offline MovieLens recommendation demo (from a checkout)")
    d.add_argument(
        "--data", default=None, help="MovieLens ml-latest-small folder ($BERTREC_MOVIELENS)"
    )
    d.add_argument("--model", default=None, help="model directory (default: cached export)")
    d.add_argument("--users", type=int, default=3, help="users to show")
    d.add_argument("--plot", default=None, metavar="PNG", help="draw the catalog in 2-D here")
    d.set_defaults(func=_demo)
    _add_batch_parsers(sub)
    from bertrec.serve.cli import add_serve_parser  # light: starlette/uvicorn load in run()

    add_serve_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args))
    except BertrecError as exc:
        return _fail(args.command, str(exc))
    except ModuleNotFoundError as exc:  # an optional dependency this command needs
        top = (exc.name or "").split(".")[0]
        extra = EXTRAS.get(top)
        if extra is None:
            raise
        return _fail(
            args.command,
            f"{top} is not installed; `bertrec {args.command}` needs "
            f"pip install 'bertrec[{extra}]'",
        )
    except OSError as exc:  # environmental (disk full, permissions): one line, no traceback
        where = f" {exc.filename!r}" if exc.filename else ""
        return _fail(args.command, f"{exc.strerror or exc}{where}")
    except KeyboardInterrupt:
        _fail(args.command, "interrupted")
        return 130


def _fail(command: str, message: str) -> int:
    print(f"bertrec {command}: error: {' '.join(message.split())}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
