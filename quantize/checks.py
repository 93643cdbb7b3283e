"""``check_model``: measure a model directory's backend variants that have no file of their
own (OpenVINO bf16 runs the fp32 file) and record their fidelity in ``manifest.json``.

The Encoder never writes its model directory; this is the step that does, at export time
(where the machine can run bf16) or later with ``bertrec check MODEL_DIR``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from bertrec.errors import ProviderError
from bertrec.runtime.encoder import Encoder
from bertrec.runtime.fidelity import fidelity
from bertrec.runtime.manifest import read_manifest, write_manifest
from bertrec.runtime.openvino_runner import BF16_CHECK, cpu_has_bf16, openvino_importable
from bertrec.runtime.texts import default_sentences

log = logging.getLogger("bertrec.quantize")


def bf16_available() -> bool:
    """Whether this machine can run (and so check) OpenVINO bf16."""
    return openvino_importable() and cpu_has_bf16()


def check_model(
    model_dir: str | os.PathLike[str], texts: Sequence[str] | None = None
) -> dict[str, dict[str, Any]]:
    """Record the OpenVINO bf16 fidelity against ONNX Runtime fp32 in the manifest.

    Args:
        model_dir: a model directory with an fp32 variant.
        texts: sentences to compare on (default: the packaged set).

    Returns:
        The manifest's ``runtime_checks`` after the check.

    Raises:
        ProviderError: OpenVINO is not installed or this CPU has no bf16 instructions.
        NotFoundError / FileFormatError: bad model directory.
    """
    if not bf16_available():
        raise ProviderError(
            "the bf16 check needs OpenVINO and a CPU with bf16 instructions (AVX512-BF16 or "
            "AMX); install bertrec[openvino] and run it on such a machine"
        )
    root = Path(model_dir)
    sentences = list(texts) if texts is not None else default_sentences()
    ref = Encoder(root, "fp32", "cpu", backend="onnxruntime").encode(sentences)
    got = Encoder(root, "bf16", "cpu", backend="openvino").encode(sentences)
    figures = {**fidelity(got, ref), "reference": "onnxruntime fp32, packaged sentences"}
    log.info("OpenVINO bf16 vs fp32: %s", figures)
    manifest = read_manifest(root)
    checks = {**manifest.runtime_checks, BF16_CHECK: figures}
    write_manifest(root, replace(manifest, runtime_checks=checks))
    return checks
