"""``python -m tuner.tracking.mlflow_ui``: the MLflow UI on the local store, stopped with everything it started.

    python -m tuner.tracking.mlflow_ui                      # sqlite:///$PWD/mlflow.db, $PWD/mlartifacts, 127.0.0.1:5000
    python -m tuner.tracking.mlflow_ui --port 5001          # `make mlflow-ui PORT=5001`

``mlflow ui`` (3.17) starts uvicorn with its workers and a job runner with several
huey consumers; stopping only its main PID leaves them running, and a second
``mlflow ui`` then finds its port taken. This wrapper starts ``mlflow ui`` in its
own session, so the terminal's Ctrl-C reaches only the wrapper, and on SIGINT,
SIGTERM or SIGHUP it stops the whole tree itself: SIGTERM to the process group
and to every descendant that left it, SIGKILL to those still alive after a few
seconds (at once on a second signal). It then exits 0. If mlflow exits by
itself, the wrapper exits with mlflow's code, or 1 when mlflow said 0 but the
port was busy (mlflow 3.17 reports "Address already in use" and exits 0).

It imports neither mlflow nor ray: it only launches a process, so it starts at once.
Linux only: it reads ``/proc``.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tuner.processes import Proc, descendants, process_table

MODEL_TRAINING_VIEW = "/#/experiments?workflowType=machine_learning"
GRACE_S = 5.0  # SIGTERM to SIGKILL; uvicorn's workers need about a second on 2 cores
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # SIGHUP: the terminal was closed
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


def ui_command(*, backend_store_uri: str, default_artifact_root: str, host: str, port: int) -> list[str]:
    """``mlflow ui`` from the running interpreter's environment."""
    mlflow = Path(sys.executable).with_name("mlflow")
    return [str(mlflow), "ui", "--backend-store-uri", backend_store_uri,
            "--default-artifact-root", default_artifact_root, "--host", host, "--port", str(port)]  # fmt: skip


def _prctl() -> Callable[..., int] | None:
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def launch(command: list[str]) -> subprocess.Popen:
    """Start ``command`` in its own session; it gets SIGTERM if this process dies without stopping it."""
    prctl = _prctl()  # looked up before the fork: the child only makes the call

    def die_with_parent() -> None:
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)

    return subprocess.Popen(command, stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=die_with_parent)


def _alive(pid: int, start: int, table: dict[int, Proc]) -> bool:
    proc = table.get(pid)
    return proc is not None and proc.start == start and proc.state not in "ZX"


def _members(process: subprocess.Popen, table: dict[int, Proc]) -> dict[int, int]:
    """Live processes of ``process``'s group, and this process's other descendants (it starts nothing else)."""
    pids = descendants(os.getpid(), table=table) | {pid for pid, proc in table.items() if proc.pgid == process.pid}
    return {pid: table[pid].start for pid in pids if _alive(pid, table[pid].start, table)}


def _reap(process: subprocess.Popen, table: dict[int, Proc]) -> None:
    """Collect the exit status of ``process`` and of orphans handed to this process (it is their subreaper)."""
    process.poll()
    for pid, proc in table.items():
        if proc.ppid == os.getpid() and proc.state == "Z" and pid != process.pid:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass


def _send(pid: int, sig: int, *, group: bool = False) -> None:
    try:
        if group:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_tree(process: subprocess.Popen, *, grace: float = GRACE_S, hurry: Callable[[], bool] = lambda: False) -> None:
    """SIGTERM to ``process``'s group and descendants, SIGKILL after ``grace`` s or when ``hurry()``; wait for all."""
    sent: dict[int, tuple[int, int]] = {}  # pid -> (start, last signal): each process is signalled once per stage
    group_sent: set[int] = set()
    kill_at = time.monotonic() + grace
    give_up = kill_at + 10.0  # a process in uninterruptible sleep may outlive SIGKILL for a while
    while time.monotonic() < give_up:
        table = process_table()
        _reap(process, table)
        live = _members(process, table)
        # Those that left the group and outlived their parent without reaching us (no subreaper): still ours.
        live.update({pid: start for pid, (start, _) in sent.items() if _alive(pid, start, table)})
        if not live and process.returncode is not None:
            return
        sig = signal.SIGKILL if time.monotonic() >= kill_at or hurry() else signal.SIGTERM
        if sig not in group_sent:  # the group catches what starts between the walk and the signal
            _send(process.pid, sig, group=True)
            group_sent.add(sig)
        for pid, start in live.items():
            if sent.get(pid, (0, None))[1] != sig:
                _send(pid, sig)
                sent[pid] = (start, sig)
        time.sleep(0.1)
    print(f"mlflow_ui: processes still running after SIGKILL: {sorted(live)}", file=sys.stderr)


def port_in_use(host: str, *, port: int) -> bool:
    """Whether binding ``host:port`` fails because someone holds it (as uvicorn binds: SO_REUSEADDR)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except OSError:
        return False
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as e:
            return e.errno == errno.EADDRINUSE
    return False


def _parser() -> argparse.ArgumentParser:
    here = Path.cwd()
    parser = argparse.ArgumentParser(
        prog="python -m tuner.tracking.mlflow_ui",
        description="The MLflow UI on a local store; Ctrl-C stops it and every process it started.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--backend-store-uri", default=f"sqlite:///{here / 'mlflow.db'}", help="MLflow's store")
    parser.add_argument("--default-artifact-root", default=str(here / "mlartifacts"), help="where artifacts go")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=5000, help="port to listen on")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not 0 < args.port < 65536:
        parser.error(f"--port is {args.port}, but must be between 1 and 65535")
    command = ui_command(backend_store_uri=args.backend_store_uri, default_artifact_root=args.default_artifact_root,
                         host=args.host, port=args.port)  # fmt: skip
    if not Path(command[0]).is_file():
        parser.error(f"{command[0]} not found: install mlflow in this environment (make venv)")
    received: list[int] = []
    for sig in STOP_SIGNALS:
        signal.signal(sig, lambda signum, _frame: received.append(signum))
    prctl = _prctl()
    if prctl is not None:  # orphaned descendants come to this process, so the walk still finds them
        prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    print(f"searches' runs: http://{args.host}:{args.port}{MODEL_TRAINING_VIEW}", flush=True)
    process = launch(command)
    try:
        while not received and process.poll() is None:
            _reap(process, process_table())
            time.sleep(0.5)
    finally:
        if received:
            print("mlflow_ui: stopping mlflow ui and its workers", file=sys.stderr, flush=True)
        stop_tree(process, hurry=lambda: len(received) > 1)
    if received:
        return 0
    code = process.returncode if process.returncode >= 0 else 128 - process.returncode
    if port_in_use(args.host, port=args.port):
        print(f"mlflow_ui: port {args.port} on {args.host} is already in use (another MLflow UI?); "
              f"pick a free one: make mlflow-ui PORT={args.port + 1}", file=sys.stderr)  # fmt: skip
        return code or 1
    return code


if __name__ == "__main__":
    sys.exit(main())
