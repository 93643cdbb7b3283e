"""``create_app`` on Ray Serve: the README's deployment on a local Ray, its HTTP proxy on a
free loopback port, answering as ``bertrec serve`` does."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from servekit import MODEL_NAME, free_port, wait_ready

TEXTS = ["a quiet family drama", "a space adventure with robots", "a war story at sea"]


def test_ray_serve_hosts_create_app(tiny_model_dir: Path) -> None:
    ray = pytest.importorskip(
        "ray", reason="Ray is not installed (pip install 'bertrec[ray-serve]')"
    )
    serve = pytest.importorskip(
        "ray.serve", reason="Ray Serve is not installed (pip install 'bertrec[ray-serve]')"
    )
    from bertrec import Encoder
    from bertrec.serve import create_app

    model_dir = str(tiny_model_dir)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # The deployment below is defined here, so the replica gets it by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})

        # As in the README: the model loads on the replica, nothing large is pickled.
        @serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 1})
        @serve.ingress(lambda: create_app(model_dir, workers=1, threads=1, model_name=MODEL_NAME))
        class Embeddings:
            pass

        serve.run(Embeddings.bind(), route_prefix="/")
        assert wait_ready(url, 120.0), f"the Ray Serve deployment at {url} was not ready"
        res = httpx.post(
            f"{url}/v1/embeddings", json={"input": TEXTS, "model": MODEL_NAME}, timeout=30
        )
        assert res.status_code == 200, res.text
        body = res.json()
        assert [d["index"] for d in body["data"]] == [0, 1, 2]
        got = np.asarray([d["embedding"] for d in body["data"]], dtype=np.float32)
        want = Encoder(tiny_model_dir).encode(TEXTS)
        assert float(np.min(np.sum(got * want, axis=1))) >= 0.99999
        assert body["usage"]["prompt_tokens"] > 0
        # Errors keep OpenAI's shape through Ray's proxy.
        bad = httpx.post(f"{url}/v1/embeddings", content=b"{not json", timeout=30)
        assert bad.status_code == 400
        assert set(bad.json()["error"]) >= {"message", "type", "code"}
        missing = httpx.post(f"{url}/v1/embeddings", json={"model": MODEL_NAME}, timeout=30)
        assert missing.status_code == 422 and "input" in missing.json()["error"]["message"]
    finally:
        serve.shutdown()
        ray.shutdown()
