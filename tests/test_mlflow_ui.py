"""``python -m tuner.tracking.mlflow_ui`` as a real process: a stop signal ends it and every process it started."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.servers import free_port, stop_group, wait_for_http

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(ppid, state, start time) of ``pid``, or None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return int(fields[1]), fields[0], int(fields[19])


def _collect(root: int, into: dict[int, int]) -> None:
    """Add every live descendant of ``root`` to ``into`` (pid -> start time, which tells a reused PID apart)."""
    table = {int(p): s for p in os.listdir("/proc") if p.isdigit() and (s := _stat(int(p)))}
    todo = [root]
    while todo:
        parent = todo.pop()
        for pid, (ppid, state, start) in table.items():
            if ppid == parent and state != "Z" and pid not in into:
                into[pid] = start
                todo.append(pid)


def _alive(pids: dict[int, int]) -> dict[int, str]:
    """Those of ``pids`` still running (zombies do not count), with their command lines."""
    alive = {}
    for pid, start in pids.items():
        stat = _stat(pid)
        if stat and stat[2] == start and stat[1] != "Z":
            alive[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:120]
    return alive


def _start(tmp_path: Path, port: int) -> tuple[subprocess.Popen, Path]:
    log = tmp_path / "mlflow_ui.log"
    command = [sys.executable, "-m", "tuner.tracking.mlflow_ui", "--backend-store-uri", f"sqlite:///{tmp_path}/mlflow.db",
               "--default-artifact-root", str(tmp_path / "mlartifacts"), "--port", str(port)]  # fmt: skip
    with open(log, "w") as out:  # own group: the test plays a terminal whose foreground group is the wrapper's
        return subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True), log


def _wait(process: subprocess.Popen, seen: dict[int, int], *, timeout: float) -> int | None:
    """Wait for ``process`` to exit, collecting its descendants meanwhile; its exit code, or None on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _collect(process.pid, seen)
        if process.poll() is not None:
            return process.returncode
        time.sleep(0.1)
    return None


def _clean_up(process: subprocess.Popen, seen: dict[int, int]) -> None:
    for pid in _alive(seen):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    stop_group(process, grace=5)


@pytest.mark.parametrize(
    ("sig", "to_group"),
    [(signal.SIGINT, True), (signal.SIGINT, False), (signal.SIGTERM, False)],
    ids=["ctrl-c-to-group", "sigint-to-wrapper", "sigterm-to-wrapper"],
)
def test_stop_signal_ends_every_process(tmp_path, sig, to_group):
    port = free_port()
    process, log = _start(tmp_path, port)
    seen: dict[int, int] = {}
    try:
        wait_for_http(f"http://127.0.0.1:{port}/", process=process, log=log, timeout=90)
        # The huey consumers start a few seconds after the UI answers: wait for them, they are what used to leak.
        deadline = time.monotonic() + 60
        while not any("huey" in line for line in _alive(seen).values()) and time.monotonic() < deadline:
            _collect(process.pid, seen)
            time.sleep(0.5)
        names = " ".join(_alive(seen).values())
        assert "uvicorn" in names and "huey" in names, f"mlflow ui started only: {names}"

        if to_group:
            os.killpg(process.pid, sig)
        else:
            process.send_signal(sig)
        code = _wait(process, seen, timeout=20)
        time.sleep(0.5)  # the wrapper's last orphans are reparented and reaped by init
        assert code == 0, log.read_text()[-3000:]
        assert _alive(seen) == {}, f"left running after {sig.name}: {_alive(seen)}"
        assert "searches' runs: http://127.0.0.1:" in log.read_text()
    finally:
        _clean_up(process, seen)


def test_busy_port_is_named(tmp_path):
    port = free_port()
    seen: dict[int, int] = {}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        process, log = _start(tmp_path, port)
        try:
            code = _wait(process, seen, timeout=90)
            time.sleep(0.5)
            text = log.read_text()
            assert code is not None and code != 0, text[-3000:]
            assert "Address already in use" in text  # mlflow's own error, then the wrapper's hint
            assert f"port {port} on 127.0.0.1 is already in use" in text and f"PORT={port + 1}" in text
            assert _alive(seen) == {}
        finally:
            _clean_up(process, seen)
