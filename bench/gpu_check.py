"""GPU check: providers, fp16 vs fp32 cosine on real text, IO binding vs plain run,
throughput at batch 1/32/256 with and without IO binding, as one table.

Run through bench/gpu_check.sh on the GPU machine. The model is a seeded random
bert-base-sized BERT (no weights can be downloaded there), fed real sentences.
"""

from __future__ import annotations

import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def build_checkpoint(path: Path) -> Path:
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    from bertrec.runtime.texts import default_sentences

    words = sorted({w for s in default_sentences() for w in re.findall(r"[a-z]+", s.lower())})
    chars = [chr(c) for c in range(97, 123)]
    vocab = list(
        dict.fromkeys(
            [
                "[PAD]",
                "[UNK]",
                "[CLS]",
                "[SEP]",
                "[MASK]",
                *chars,
                *[f"##{c}" for c in chars],
                *words,
            ]
        )
    )
    path.mkdir(parents=True)
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(path / "vocab.txt")).save_pretrained(str(path))
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(vocab))).save_pretrained(str(path))
    return path


def main() -> int:
    import onnxruntime as ort

    import bertrec
    from bertrec.runtime.fidelity import fidelity
    from bertrec.runtime.providers import cuda_usable
    from bertrec.runtime.texts import default_sentences

    print(
        f"onnxruntime {ort.__version__}; providers {ort.get_available_providers()}; "
        f"CUDA usable: {cuda_usable()}"
    )
    if not cuda_usable():
        print("CUDAExecutionProvider does not start here: nothing to check")
        return 1
    texts = (default_sentences() * 8)[:1024]
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = build_checkpoint(Path(tmp) / "ckpt")
        model_dir = bertrec.export_model(ckpt, Path(tmp) / "model", precision=("fp32", "fp16"))
        fp32_cpu = bertrec.Encoder(model_dir, precision="fp32", device="cpu").encode(texts)
        rows = []
        for precision in ("fp32", "fp16"):
            for io in (False, True):
                enc = bertrec.Encoder(
                    model_dir,
                    precision=precision,
                    device="cuda",
                    io_binding=io,
                    max_batch_tokens=10**9,
                )
                out = enc.encode(texts, batch_size=32)
                fid = fidelity(out, fp32_cpu)
                for bs in (1, 32, 256):
                    n = 64 if bs == 1 else len(texts)
                    enc.encode(texts[:n], batch_size=bs)  # warm-up
                    t0 = time.perf_counter()
                    enc.encode(texts[:n], batch_size=bs)
                    dt = time.perf_counter() - t0
                    rows.append((precision, io, bs, n / dt, fid["min_cos"], fid["mean_cos"]))
        plain = bertrec.Encoder(model_dir, precision="fp16", device="cuda", io_binding=False)
        bound = bertrec.Encoder(model_dir, precision="fp16", device="cuda", io_binding=True)
        same = np.array_equal(plain.encode(texts[:256]), bound.encode(texts[:256]))
    print(
        f"{'precision':9s} {'io_binding':10s} {'batch':>5s} {'sent/s':>9s} "
        f"{'min cos vs CPU fp32':>20s} {'mean cos':>9s}"
    )
    for p, io, bs, sps, mn, mean in rows:
        print(f"{p:9s} {str(io):10s} {bs:5d} {sps:9.0f} {mn:20.6f} {mean:9.6f}")
    print(f"IO binding output identical to plain run (fp16): {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
