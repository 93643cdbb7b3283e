"""Batching, shutdown and startup of a real server process: concurrent requests share
batches, SIGTERM under load answers every accepted request and exits 0, a bad model or
setting exits non-zero with one line."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from servekit import KEY_ENV, ServerProcess, free_port, wait_ready

from bertrec import Encoder
from bertrec.errors import ConfigError, ProviderError
from bertrec.runtime.openvino_runner import openvino_importable

WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "robots"]


def _texts(n: int, seed: int, most: int = 30) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(1, most)))) for _ in range(n)]


def _histogram(srv: ServerProcess, name: str) -> dict[str, float]:
    """``le`` -> cumulative count of an unlabelled histogram."""
    out = {}
    for line in srv.get("/metrics").text.splitlines():
        if line.startswith(f"{name}_bucket{{"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            out[le] = float(line.rsplit(" ", 1)[1])
    return out


def test_concurrent_requests_share_batches(start_server: object, tiny_model_dir: Path) -> None:
    srv = start_server("--max-wait-ms", "20")  # type: ignore[operator]
    texts = _texts(64, seed=1)

    async def rounds() -> list[list[float]]:
        async with httpx.AsyncClient(headers=srv.headers, timeout=60) as client:
            got = []
            for _ in range(3):
                calls = [client.post(srv.url + "/v1/embeddings", json={"input": t}) for t in texts]
                for r in await asyncio.gather(*calls):
                    assert r.status_code == 200, r.text
                    got.append(r.json()["data"][0]["embedding"])
            return got

    vectors = np.asarray(asyncio.run(rounds()), dtype=np.float32)
    merged = _histogram(srv, "bertrec_batch_requests")
    assert merged["1.0"] < merged["+Inf"], merged  # some batch held more than one request
    sizes = _histogram(srv, "bertrec_batch_size")
    assert sizes["1.0"] < sizes["+Inf"]
    # Batched with strangers or not, each request gets its own text's vector.
    want = Encoder(tiny_model_dir).encode(texts)
    np.testing.assert_allclose(vectors, np.concatenate([want] * 3), atol=1e-5)


def test_sigterm_under_load_answers_every_accepted_request(start_server: object) -> None:
    srv = start_server("--max-queue", "100000")  # type: ignore[operator]
    n_requests, per_request = 8, 1024
    texts = _texts(per_request, seed=2, most=100)

    async def load() -> tuple[list[httpx.Response], float]:
        async with httpx.AsyncClient(headers=srv.headers, timeout=120) as client:
            calls = [
                asyncio.ensure_future(
                    client.post(srv.url + "/v1/embeddings", json={"input": texts})
                )
                for _ in range(n_requests)
            ]
            # The signal comes once every request has been received (answered or queued).
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                inflight = srv.metric("bertrec_requests_in_flight")
                if inflight + srv.answered("embeddings") >= n_requests:
                    break
                await asyncio.sleep(0.01)
            srv.proc.send_signal(signal.SIGTERM)
            return list(await asyncio.gather(*calls)), inflight

    answers, inflight = asyncio.run(load())
    assert inflight >= 2  # under load: several requests were still running at the signal
    assert [r.status_code for r in answers] == [200] * n_requests
    assert all(len(r.json()["data"]) == per_request for r in answers)
    assert srv.proc.wait(60) == 0, srv.log()
    with pytest.raises(httpx.TransportError):  # stopped accepting
        httpx.get(srv.url + "/health", timeout=2)


def _run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bertrec.serve", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


# gunicorn --preload's way: the app (and its model) made in a parent, served by a forked
# child. In a fresh interpreter: forked from pytest's own process, whose earlier tests left
# threads running, the child hung in uvloop.new_event_loop() on a lock held at the fork.
PRELOAD_THEN_FORK = """
import multiprocessing, signal, sys
import uvicorn
from bertrec.serve import create_app

app = create_app(sys.argv[1], backend=sys.argv[2], precision="fp32")
child = multiprocessing.get_context("fork").Process(
    target=uvicorn.run, args=(app,), kwargs={"port": int(sys.argv[3]), "log_level": "warning"}
)
child.start()
print(child.pid, flush=True)
child.join()
# uvicorn.run raises the signal it caught again once it has shut down.
sys.exit(0 if child.exitcode in (0, -signal.SIGTERM) else 1)
"""


@pytest.mark.parametrize(
    "backend",
    [
        "onnxruntime",
        pytest.param(
            "openvino",
            marks=pytest.mark.skipif(
                not openvino_importable(), reason="bertrec[openvino] not installed"
            ),
        ),
    ],
)
def test_app_made_before_a_fork_serves_in_the_child(tiny_model_dir: Path, backend: str) -> None:
    """``create_app`` (which loads the model) in a parent, the server in a forked child:
    the child warms up, answers as ``Encoder.encode`` does and stops on SIGTERM
    (OpenVINO's streams model waited forever there)."""
    port = free_port()
    cmd = [sys.executable, "-c", PRELOAD_THEN_FORK, str(tiny_model_dir), backend, str(port)]
    parent = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    texts = _texts(12, seed=5)
    child = 0
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert wait_ready(url, 60), "the forked server never became ready"
        r = httpx.post(f"{url}/v1/embeddings", json={"input": texts}, timeout=30)
        assert r.status_code == 200, r.text
        got = np.array([d["embedding"] for d in r.json()["data"]], dtype=np.float32)
        want = Encoder(tiny_model_dir, backend=backend, precision="fp32").encode(texts)
        assert (np.sum(got * want, axis=1) >= 0.99999).all()
        os.kill(child, signal.SIGTERM)
        assert parent.wait(30) == 0, "the forked server did not stop on SIGTERM"
    finally:
        if parent.poll() is None:
            if child:
                os.kill(child, signal.SIGKILL)
            parent.kill()
            parent.wait()


def test_bad_model_dir_exits_non_zero_with_one_line(tmp_path: Path) -> None:
    done = _run_cli(str(tmp_path / "missing"), "--port", "1")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bertrec serve: error:"), done.stderr
    assert "missing" in lines[0]
    (tmp_path / "manifest.json").write_text("{broken")
    done = _run_cli(str(tmp_path), "--port", "1")
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_api_key_variable_must_be_set(tiny_model_dir: Path) -> None:
    env = {k: v for k, v in __import__("os").environ.items() if k != KEY_ENV}
    done = _run_cli(str(tiny_model_dir), "--api-key-env", KEY_ENV, env=env)
    assert done.returncode == 2
    assert KEY_ENV in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_missing_extra_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    import bertrec.serve

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else real(name)
    )
    with pytest.raises(ProviderError, match=r"uvicorn.*pip install 'bertrec\[serve\]'"):
        bertrec.serve.create_app("any")


def test_bad_shape_cache_is_one_line(tiny_model_dir: Path) -> None:
    from bertrec.serve.app import DEFAULT_SHAPE_CACHE, create_app

    with pytest.raises(ConfigError, match="shape_cache must be >= 1, got 0"):
        create_app(tiny_model_dir, shape_cache=0)
    done = _run_cli(str(tiny_model_dir), "--shape-cache", "-3", "--port", "1")
    assert done.returncode == 2 and "shape_cache must be >= 1" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    # The command line's default is the library's.
    help_text = _run_cli("--help").stdout
    assert "--shape-cache N" in help_text and f"default: {DEFAULT_SHAPE_CACHE}" in help_text
