"""Inputs of bench/gpu_check.py, made on the CPU machine (a GPU machine that cannot
download anything gets them as files):

- ``OUT/minilm``: the bench's MiniLM export with its fp16 variant alone (45 MB instead of
  the 160 MB of every variant);
- ``OUT/texts.json``: the serving bench's text mix (``load_text_mix``);
- ``OUT/reference.npy``: those texts through sentence-transformers in fp32 PyTorch on the
  CPU, normalized: what the fp16 vectors on CUDA are compared with.

    python -m bench.gpu_prepare OUT [--texts 2048] [--data MOVIELENS_DIR]

then carry OUT (and the onnxruntime-gpu wheel, if the GPU machine lacks it) over and run
``bash bench/gpu_check.sh --model OUT/minilm --texts OUT/texts.json --reference
OUT/reference.npy --out RESULTS`` there (bench/README.md, "On a GPU").
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

from bench.common import add_data_arg, bench_model_dir, load_text_mix, log, minilm_source


def fp16_model(out: Path) -> Path:
    """A copy of the bench's MiniLM export holding the fp16 variant alone."""
    from bertrec.quantize.quantizer import add_variant

    dest = out / "minilm"
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(bench_model_dir(), dest)
    add_variant(dest, "fp16")
    manifest = json.loads((dest / "manifest.json").read_text())
    for name, variant in list(manifest["variants"].items()):
        if name != "fp16":
            (dest / variant["file"]).unlink()
            del manifest["variants"][name]
    manifest["runtime_checks"] = {}  # checks of variants that are gone
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return dest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="folder to write (created)")
    p.add_argument("--texts", type=int, default=2048, help="texts of the mix")
    add_data_arg(p)
    args = p.parse_args(argv)
    if args.texts < 1:
        p.error(f"--texts must be at least 1, got {args.texts}")
    from sentence_transformers import SentenceTransformer

    args.out.mkdir(parents=True, exist_ok=True)
    model = fp16_model(args.out)
    mix = load_text_mix(args.texts, data_dir=args.data)
    st = SentenceTransformer(str(minilm_source()), device="cpu")
    ref = st.encode(mix.texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
    (args.out / "texts.json").write_text(
        json.dumps({"texts": mix.texts, "reference": "sentence-transformers fp32, CPU"})
    )
    np.save(args.out / "reference.npy", np.asarray(ref, dtype=np.float32))
    log(f"wrote {model}, {len(mix.texts)} texts and their reference vectors to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
