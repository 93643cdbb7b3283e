#!/usr/bin/env bash
# The CPU-only install, as the README documents it: the wheel (with its LICENSE) into a
# fresh venv with `bertrec[cpu]` (the small onnxruntime, no CUDA wheel, no torch), `pip
# check`, then a real encode of a tiny model exported by the dev venv. Run by `make
# install-check` (and CI).
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
.venv/bin/pip wheel -q --no-deps -w "$work/dist" .
wheel=$(ls "$work"/dist/bertrec-*.whl)
python3 -c "import sys, zipfile; names = zipfile.ZipFile(sys.argv[1]).namelist(); \
assert any(n.endswith('/LICENSE') for n in names), 'wheel has no LICENSE'; \
assert not any(n.startswith(('examples/', 'tests/', 'bench/')) for n in names), names" "$wheel"
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q "bertrec[cpu] @ file://$wheel"
"$work/venv/bin/pip" check
if "$work/venv/bin/pip" show -q onnxruntime-gpu torch 2>/dev/null; then
    echo "the CPU-only install pulled onnxruntime-gpu or torch" >&2
    exit 1
fi
.venv/bin/python - "$work/model" <<'PY'
import sys
from pathlib import Path

sys.path.insert(0, "tests")
from tinymodel import build_tiny_checkpoint

from bertrec.export import export_model

export_model(build_tiny_checkpoint(Path(sys.argv[1]) / "ckpt"), Path(sys.argv[1]) / "m", "fp32,int8")
PY
(cd "$work" && "$work/venv/bin/python" - "$work/model/m" <<'PY'
import sys

import bertrec

enc = bertrec.Encoder(sys.argv[1])
vecs = enc.encode(["a cpu-only install", "works"])
assert vecs.shape == (2, enc.dim), vecs.shape
print(f"CPU-only install ok: {enc.describe()}")
PY
)
