"""The serve tests' shared pieces: a real server process on a free loopback port, and the
key, model name and store they use (a module of its own: ``from conftest import`` would
pick whichever conftest.py pytest imported last)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

KEY_ENV = "BERTREC_TEST_API_KEY"
KEY = "test-key-7f3a"
MODEL_NAME = "tiny"
ITEM_TEXTS = [
    "a space adventure with robots",
    "a quiet family drama",
    "a comedy about a cooking contest",
    "a documentary on deep sea animals",
    "a thriller set on a night train",
    "an animated film about toys",
    "a war story at sea",
    "a romance in paris",
]
ITEM_IDS = [10, 11, 12, 13, 14, 15, 16, 17]
POPULARITY = [5, 1, 3, 2, 8, 13, 1, 4]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(
    url: str,
    timeout_s: float,
    headers: dict[str, str] | None = None,
    alive: Callable[[], None] | None = None,
) -> bool:
    """Poll ``url``/ready until it answers 200 (True) or ``timeout_s`` passes (False);
    ``alive`` is called before each try, to raise if the server is gone."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if alive is not None:
            alive()
        try:
            if httpx.get(f"{url}/ready", headers=headers, timeout=2.0).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    return False


class ServerProcess:
    """``python -m bertrec.serve MODEL_DIR --port P ...`` with its stderr in a file."""

    def __init__(self, model_dir: Path, log_dir: Path, *args: str, key: str | None = KEY) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"server-{self.port}.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        cmd = [sys.executable, "-m", "bertrec.serve", str(model_dir), "--port", str(self.port)]
        cmd += ["--model-name", MODEL_NAME, *args]
        if key is not None:
            env[KEY_ENV] = key
            cmd += ["--api-key-env", KEY_ENV]
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout_s: float = 60.0) -> ServerProcess:
        def alive() -> None:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}: {self.log()}")

        if wait_ready(self.url, timeout_s, self.headers, alive):
            return self
        raise RuntimeError(f"server not ready after {timeout_s}s: {self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-2000:]

    def post(self, path: str, body: Any = None, **kwargs: Any) -> httpx.Response:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        return httpx.post(f"{self.url}{path}", json=body, headers=headers, timeout=60, **kwargs)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        return httpx.get(f"{self.url}{path}", headers=headers, timeout=60, **kwargs)

    def metric(self, name: str) -> float:
        """The value of one unlabelled sample of ``/metrics``."""
        for line in self.get("/metrics").text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
        raise KeyError(name)

    def answered(self, route: str) -> float:
        """Requests answered on ``route``, whatever their status."""
        prefix = f'bertrec_requests_total{{route="{route}",'
        lines = self.get("/metrics").text.splitlines()
        return sum(float(x.rsplit(" ", 1)[1]) for x in lines if x.startswith(prefix))

    def stop(self, timeout_s: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self._log.close()
        return rc
