"""Real servers for tests: each started in its own process group and stopped by its PID, even when a test fails."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

_GIVEN: set[int] = set()


def free_port() -> int:
    """A port nobody listens on, and one this process has not handed out before (the kernel may repeat one)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _GIVEN:
            _GIVEN.add(port)
            return port


def stop_group(process: subprocess.Popen, *, grace: float = 10.0) -> None:
    """Stop ``process`` and everything it started (its process group, whose id is its PID)."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=grace)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # the group's stragglers (MLflow's workers)
    except ProcessLookupError:
        pass
    process.wait(timeout=grace)


def wait_for_http(url: str, *, process: subprocess.Popen, log: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[:3]} exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                reply.read()
            return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


class MlflowServer:
    """``mlflow server`` on 127.0.0.1: a backend store URI, artifacts served from a folder."""

    def __init__(self, *, backend: str, artifacts: Path, log: Path, port: int | None = None, host: str = "127.0.0.1"):
        self.backend, self.artifacts, self.log = backend, artifacts, log
        self.port = port or free_port()
        self.host = host
        self.process: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MlflowServer:
        mlflow = Path(sys.executable).with_name("mlflow")
        command = [str(mlflow), "server", "--backend-store-uri", self.backend, "--artifacts-destination",
                   str(self.artifacts), "--host", self.host, "--port", str(self.port), "--workers", "1"]  # fmt: skip
        with open(self.log, "a") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for_http(f"{self.uri}/health", process=self.process, log=self.log)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.process is not None:
            stop_group(self.process)
            self.process = None

    def __enter__(self) -> MlflowServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
