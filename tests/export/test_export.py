"""Export: the family of architectures, sentence-transformers configs, fidelity, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from tinymodel import build_tiny_checkpoint

import bertrec
from bertrec.export import export_model, parse_precisions, supported_architectures
from bertrec.runtime.fidelity import fidelity
from bertrec.runtime.manifest import read_manifest


def _no_leftovers(parent: Path) -> None:
    left = [p.name for p in parent.iterdir() if p.name.startswith(".")]
    assert left == [], f"temporary files left behind: {left}"


def _torch_mean_pool(ckpt: Path, texts: list[str], max_length: int) -> np.ndarray:
    """An independent reference: HF model + mean pooling + L2 norm, in float64 at the end."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(ckpt))
    model = AutoModel.from_pretrained(str(ckpt)).eval()
    batch = tok(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    kwargs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.inference_mode():
        hidden = model(**kwargs)[0].double()
    mask = batch["attention_mask"].unsqueeze(-1).double()
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(pooled, dim=1).numpy()


@pytest.mark.parametrize("model_type", supported_architectures())
def test_every_architecture_exports_and_matches_pytorch(model_type: str, tmp_path: Path) -> None:
    ckpt = build_tiny_checkpoint(tmp_path / "ckpt", model_type)
    out = export_model(ckpt, tmp_path / "out", precision="fp32")
    m = read_manifest(out)
    assert m.model_type == model_type
    assert m.pooling == "mean" and m.normalize is True
    assert ("token_type_ids" in m.input_names) == (model_type in ("bert", "electra"))
    assert m.variants["fp32"].validation["min_cos"] >= 0.99999
    texts = ["a quiet thriller", "", "the battery lasts two full days but gets warm " * 3]
    got = bertrec.Encoder(out, precision="fp32").encode(texts)
    ref = _torch_mean_pool(ckpt, texts, m.max_length)
    assert fidelity(got, ref)["min_cos"] >= 0.99999
    _no_leftovers(tmp_path)


def test_manifest_and_files(tiny_model_dir: Path) -> None:
    names = sorted(p.name for p in tiny_model_dir.iterdir())
    assert {"manifest.json", "model.fp32.onnx", "tokenizer.json"} <= set(names)
    data = json.loads((tiny_model_dir / "manifest.json").read_text())
    assert data["schema_version"] == 1
    assert data["output_name"] == "sentence_embedding"
    assert data["dim"] == 32
    assert set(data["versions"]) >= {"bertrec", "torch", "transformers", "onnxruntime"}
    v = data["variants"]["fp32"]
    assert v["size_bytes"] == (tiny_model_dir / "model.fp32.onnx").stat().st_size
    assert len(v["sha256"]) == 64
    assert bertrec.Manifest.from_dict(data).to_dict() == data  # round trip


def test_onnx_graph_has_dynamic_axes_and_pooled_output(tiny_model_dir: Path) -> None:
    import onnx

    g = onnx.load(str(tiny_model_dir / "model.fp32.onnx")).graph
    (out,) = g.output
    assert out.name == "sentence_embedding"
    dims = out.type.tensor_type.shape.dim
    assert len(dims) == 2 and dims[0].dim_param and dims[1].dim_value == 32
    for inp in g.input:
        d = inp.type.tensor_type.shape.dim
        assert d[0].dim_param and d[1].dim_param, inp.name


def test_sentence_transformers_directory_pooling_is_read(
    tiny_bert_dir: Path, tmp_path: Path
) -> None:
    from sentence_transformers import SentenceTransformer, models

    st_dir = tmp_path / "st"
    word = models.Transformer(str(tiny_bert_dir), max_seq_length=40)
    pool = models.Pooling(word.get_embedding_dimension(), pooling_mode="cls")
    SentenceTransformer(modules=[word, pool], device="cpu").save(str(st_dir))
    out = export_model(st_dir, tmp_path / "out", precision="fp32")
    m = read_manifest(out)
    assert (m.pooling, m.normalize, m.max_length) == ("cls", False, 40)
    texts = ["where can i find a cheap flight", "kids loved it", "x " * 100]
    ref = SentenceTransformer(str(st_dir), device="cpu").encode(texts)
    got = bertrec.Encoder(out, precision="fp32").encode(texts)
    assert fidelity(got, ref)["min_cos"] >= 0.99999
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_unsupported_sentence_transformers_pooling(tiny_bert_dir: Path, tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer, models

    st_dir = tmp_path / "st"
    word = models.Transformer(str(tiny_bert_dir))
    pool = models.Pooling(word.get_embedding_dimension(), pooling_mode="weightedmean")
    SentenceTransformer(modules=[word, pool], device="cpu").save(str(st_dir))
    with pytest.raises(bertrec.ConfigError, match="weightedmean.*--pooling"):
        export_model(st_dir, tmp_path / "out", precision="fp32")
    out = export_model(st_dir, tmp_path / "out", precision="fp32", pooling="mean")
    assert read_manifest(out).pooling == "mean"


@pytest.mark.parametrize("pooling", ["max", "cls"])
def test_explicit_pooling_and_no_normalize(
    tiny_bert_dir: Path, tmp_path: Path, pooling: str
) -> None:
    out = export_model(
        tiny_bert_dir, tmp_path / "o", precision="fp32", pooling=pooling, normalize=False
    )
    m = read_manifest(out)
    assert (m.pooling, m.normalize) == (pooling, False)
    vec = bertrec.Encoder(out, precision="fp32").encode(["an unnormalized vector please"])
    assert not np.isclose(np.linalg.norm(vec), 1.0)


def test_overwrite_replaces_atomically(tiny_bert_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "m"
    export_model(tiny_bert_dir, out, precision="fp32", max_length=16)
    export_model(tiny_bert_dir, out, precision="fp32", max_length=24, overwrite=True)
    assert read_manifest(out).max_length == 24
    _no_leftovers(tmp_path)


def test_failed_validation_writes_nothing(
    tiny_bert_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bertrec.export.exporter as exporter

    def bad(*args: object, **kwargs: object) -> dict[str, float]:
        return {"min_cos": 0.5, "max_abs_diff": 1.0, "mean_cos": 0.9, "p1_cos": 0.6, "n": 1}

    monkeypatch.setattr(exporter, "validate_variant", bad)
    with pytest.raises(bertrec.ValidationFailedError, match=r"min cosine 0\.5"):
        export_model(tiny_bert_dir, tmp_path / "m", precision="fp32")
    assert not (tmp_path / "m").exists()
    _no_leftovers(tmp_path)


def test_interrupted_export_leaves_existing_output(
    tiny_bert_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bertrec.export.exporter as exporter

    out = export_model(tiny_bert_dir, tmp_path / "m", precision="fp32")
    before = (out / "manifest.json").read_text()

    def interrupt(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(exporter, "validate_variant", interrupt)
    with pytest.raises(KeyboardInterrupt):
        export_model(tiny_bert_dir, out, precision="fp32", overwrite=True)
    assert (out / "manifest.json").read_text() == before
    _no_leftovers(tmp_path)


# -- bad input ------------------------------------------------------------------------


def test_missing_source(tmp_path: Path) -> None:
    with pytest.raises(bertrec.NotFoundError, match="does not exist"):
        export_model(tmp_path / "nope", tmp_path / "out")
    with pytest.raises(bertrec.NotFoundError, match="non-empty"):
        export_model("", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_source_without_config(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(bertrec.NotFoundError, match="no config.json"):
        export_model(tmp_path / "empty", tmp_path / "out")


def test_unsupported_architecture_names_the_family(tmp_path: Path) -> None:
    (tmp_path / "gpt").mkdir()
    (tmp_path / "gpt" / "config.json").write_text('{"model_type": "gpt2"}')
    with pytest.raises(bertrec.ConfigError, match="'gpt2'.*bert, distilbert"):
        export_model(tmp_path / "gpt", tmp_path / "out")


def test_corrupted_weights(tiny_bert_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(tiny_bert_dir, bad)
    weights = bad / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 3])
    with pytest.raises(bertrec.FileFormatError, match="corrupted or incomplete"):
        export_model(bad, tmp_path / "out", precision="fp32")
    assert not (tmp_path / "out").exists()
    _no_leftovers(tmp_path)


def test_corrupted_config(tiny_bert_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(tiny_bert_dir, bad)
    (bad / "config.json").write_text("{not json")
    with pytest.raises(bertrec.FileFormatError, match="corrupted"):
        export_model(bad, tmp_path / "out")


def test_output_exists_without_overwrite(tiny_bert_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(bertrec.OutputError, match="--overwrite"):
        export_model(tiny_bert_dir, tmp_path / "out")
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


def test_unwritable_output(tiny_bert_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("a file, not a folder")
    with pytest.raises(bertrec.OutputError, match="cannot write"):
        export_model(tiny_bert_dir, tmp_path / "file" / "out", precision="fp32")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"precision": "int4"}, "unknown precision"),
        ({"precision": ""}, "unknown precision"),
        ({"pooling": "weighted"}, "unknown pooling"),
        ({"max_length": 10_000}, "exceeds the model's position limit 130"),
        ({"max_length": 0}, "positive int"),
        ({"max_length": 1}, "leaves no room for text.*from 3 to 130"),
        ({"max_length": 2}, "adds 2 special tokens.*from 3 to 130"),
        ({"opset": 3}, "opset"),
    ],
)
def test_bad_options(
    tiny_bert_dir: Path, tmp_path: Path, kwargs: dict[str, object], match: str
) -> None:
    with pytest.raises(bertrec.ConfigError, match=match):
        export_model(tiny_bert_dir, tmp_path / "out", **kwargs)  # type: ignore[arg-type]
    assert not (tmp_path / "out").exists()
    _no_leftovers(tmp_path)


def test_shortest_max_length_exports_a_model_that_takes_long_texts(
    tiny_bert_dir: Path, tmp_path: Path
) -> None:
    # [CLS] + one token + [SEP]: the least that still encodes some text.
    out = export_model(tiny_bert_dir, tmp_path / "m", precision="fp32", max_length=3)
    assert read_manifest(out).max_length == 3
    vectors = bertrec.Encoder(out).encode(["a long text " * 200, "x"])
    assert np.isfinite(vectors).all() and vectors.shape[0] == 2


def test_cli_export_max_length_too_small(
    tiny_bert_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bertrec.cli import main

    code = main(["export", str(tiny_bert_dir), str(tmp_path / "m"), "--max-length", "1"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "from 3 to 130" in err
    assert list(tmp_path.iterdir()) == []


def test_parse_precisions() -> None:
    assert parse_precisions("int8") == ("fp32", "int8")
    assert parse_precisions(["FP16", "fp32"]) == ("fp32", "fp16")
    with pytest.raises(bertrec.ConfigError):
        parse_precisions("fp32,bf17")


# -- the real model -------------------------------------------------------------------


@pytest.mark.slow
def test_minilm_fp32_matches_sentence_transformers(
    minilm_source: Path, minilm_model_dir: Path, movie_titles: list[str]
) -> None:
    from sentence_transformers import SentenceTransformer

    texts = movie_titles[:1200]
    ref = SentenceTransformer(str(minilm_source), device="cpu").encode(
        texts, normalize_embeddings=True
    )
    got = bertrec.Encoder(minilm_model_dir, precision="fp32").encode(texts)
    figures = fidelity(got, ref)
    assert figures["n"] >= 1000
    assert figures["min_cos"] >= 0.99999, figures
    assert read_manifest(minilm_model_dir).variants["fp32"].validation["min_cos"] >= 0.99999


@pytest.mark.slow
def test_prompts_carried_and_equal_to_sentence_transformers(
    minilm_source: Path, tmp_path: Path
) -> None:
    """A sentence-transformers checkpoint's prompts reach the manifest, and encode_query /
    encode_document give sentence-transformers' own vectors with those prompts."""
    import json
    import shutil

    from sentence_transformers import SentenceTransformer

    src = Path(shutil.copytree(minilm_source, tmp_path / "st"))
    prompts = {"query": "query: ", "passage": "passage: "}
    cfg = json.loads((src / "config_sentence_transformers.json").read_text())
    cfg.update({"prompts": prompts, "default_prompt_name": None})
    (src / "config_sentence_transformers.json").write_text(json.dumps(cfg))
    out = export_model(src, tmp_path / "m", precision="fp32")
    assert bertrec.read_manifest(out).prompts == prompts
    enc = bertrec.Encoder(out, precision="fp32", backend="onnxruntime")
    st = SentenceTransformer(str(src), device="cpu")
    texts = ["thrillers set in cold cities", "a cookbook of soups", ""]
    for ours, name in ((enc.encode_query(texts), "query"), (enc.encode_document(texts), "passage")):
        ref = st.encode(texts, prompt_name=name, normalize_embeddings=True)
        assert float(np.min(np.sum(ours * ref, axis=1))) >= 0.99999
    plain = st.encode(texts, normalize_embeddings=True)
    assert float(np.min(np.sum(enc.encode(texts) * plain, axis=1))) >= 0.99999
    # Matryoshka-style truncation, as sentence-transformers' truncate_dim.
    cut = SentenceTransformer(str(src), device="cpu", truncate_dim=64).encode(texts)
    np.testing.assert_allclose(enc.encode(texts, truncate_dim=64), cut, atol=1e-5)
