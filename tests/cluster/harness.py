"""A real cluster on one machine: PostgreSQL, an MLflow server on it, and a two-node Ray cluster with token auth.

Every process is started in its own process group and stopped by its PID (and
its group), even when the test fails; what Ray started is found again by the
node's own temp dir and stopped by PID too.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil

from tests.servers import MlflowServer, free_port, stop_group

BIN = Path(sys.executable).parent


def postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    if found:
        return Path(found[-1]).parent
    which = shutil.which("postgres")
    return Path(which).parent if which else None


class Postgres:
    """A throwaway PostgreSQL cluster on 127.0.0.1 with trust auth, a database ``mlflow`` owned by ``mlflow``."""

    def __init__(self) -> None:
        self.bin = postgres_bin()
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.folder: Path | None = None
        # PostgreSQL refuses to run as root: then it runs as the postgres account Debian's package made.
        self.user = "postgres" if os.geteuid() == 0 else None

    @property
    def uri(self) -> str:
        return f"postgresql://mlflow@127.0.0.1:{self.port}/mlflow"

    def _run(self, *command: str) -> None:
        done = subprocess.run(command, user=self.user, capture_output=True, text=True, timeout=120)
        if done.returncode:
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")

    def start(self) -> Postgres:
        import psycopg

        # Not under pytest's tmp_path: its folders are private to root, and the server may run as postgres.
        self.folder = Path(tempfile.mkdtemp(prefix="hpsearch-pg-"))
        if self.user:
            account = pwd.getpwnam(self.user)
            os.chown(self.folder, account.pw_uid, account.pw_gid)
        data = self.folder / "data"
        self._run(str(self.bin / "initdb"), "-D", str(data), "-U", "mlflow", "--auth=trust", "-E", "UTF8")
        log = open(self.folder / "server.log", "w")  # noqa: SIM115 (kept open for the server's lifetime)
        command = [str(self.bin / "postgres"), "-D", str(data), "-p", str(self.port), "-h", "127.0.0.1",
                   "-k", str(self.folder)]  # fmt: skip
        self.process = subprocess.Popen(command, user=self.user, stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            try:
                connection = psycopg.connect(host="127.0.0.1", port=self.port, user="mlflow", dbname="postgres",
                                             autocommit=True)  # fmt: skip
                break
            except psycopg.OperationalError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    log = (self.folder / "server.log").read_text()
                    raise RuntimeError(f"PostgreSQL did not start:\n{log}") from None
                time.sleep(0.3)
        with connection:
            connection.execute("CREATE DATABASE mlflow")
        return self

    def query(self, sql: str) -> list[tuple]:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user="mlflow", dbname="mlflow") as connection:
            return connection.execute(sql).fetchall()

    def stop(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                os.kill(self.process.pid, signal.SIGINT)  # fast shutdown: backends end, then the postmaster
                try:
                    self.process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    pass
            stop_group(self.process)
            self.process = None
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None


def ray_env(token: str) -> dict[str, str]:
    """What every Ray process and client of the cluster runs with: token auth on, this venv first on PATH."""
    env = dict(os.environ)
    env.update(
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=token,
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        RAY_USAGE_STATS_ENABLED="0",
    )
    return env


class RayNode:
    """One node, ``ray start --block`` in its own process group, with its own temp dir and ports."""

    def __init__(self, *, name: str, cpus: int, token: str, log_dir: Path, head: RayNode | None = None) -> None:
        self.name, self.cpus, self.token, self.head = name, cpus, token, head
        # Ray's socket paths must stay short: a short temp dir of its own, not under pytest's tmp_path.
        self.temp_dir = Path(tempfile.mkdtemp(prefix=f"ray-{name}-", dir="/tmp"))
        self.log = log_dir / f"ray-{name}.log"
        self.gcs_port = free_port()
        self.dashboard_port = free_port()
        self.process: subprocess.Popen | None = None
        # Each node's workers listen on ports of their own, below the kernel's range for free ports.
        self.worker_ports = (20000, 24999) if head is None else (25000, 29999)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def start(self) -> RayNode:
        command = [str(BIN / "ray"), "start", "--block", f"--num-cpus={self.cpus}", "--num-gpus=0",
                   f"--temp-dir={self.temp_dir}", "--node-ip-address=127.0.0.1", "--disable-usage-stats",
                   f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}",
                   f"--metrics-export-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
                   f"--dashboard-agent-grpc-port={free_port()}", f"--runtime-env-agent-port={free_port()}",
                   f"--min-worker-port={self.worker_ports[0]}", f"--max-worker-port={self.worker_ports[1]}",
                   "--object-store-memory=500000000"]  # fmt: skip
        if self.head is None:
            command += ["--head", f"--port={self.gcs_port}", "--include-dashboard=true",
                        "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}",
                        f"--ray-client-server-port={free_port()}"]  # fmt: skip
        else:
            command += [f"--address={self.head.address}"]
        with open(self.log, "w") as out:
            self.process = subprocess.Popen(command, env=ray_env(self.token), stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True)  # fmt: skip
        return self

    def pids(self) -> list[int]:
        """The processes of this node: its ``ray start``, and every process that names its temp dir."""
        mine = str(self.temp_dir)
        found = [self.process.pid] if self.process is not None else []
        for p in psutil.process_iter(["pid", "cmdline"]):
            try:
                if any(mine in part for part in p.info["cmdline"] or ()):
                    found.append(p.info["pid"])
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return sorted(set(found))

    def raylet_pid(self) -> int:
        for pid in self.pids():
            try:
                if psutil.Process(pid).name() == "raylet":
                    return pid
            except psutil.NoSuchProcess:
                continue
        raise RuntimeError(f"no raylet for node {self.name}")

    def stop(self) -> None:
        pids = self.pids()
        if self.process is not None:
            stop_group(self.process, grace=20)
            self.process = None
        for pid in pids:  # anything that left the group: by PID
            try:
                p = psutil.Process(pid)
                children = p.children(recursive=True)
                for q in [p, *children]:
                    q.kill()
            except psutil.NoSuchProcess:
                continue
        psutil.wait_procs([psutil.Process(p) for p in pids if psutil.pid_exists(p)], timeout=10)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


class Job:
    """A running ``ray job submit`` whose output is in ``log``."""

    def __init__(self, process: subprocess.Popen, log: Path) -> None:
        self.process, self.log = process, log

    def poll(self) -> int | None:
        return self.process.poll()

    def wait(self, *, timeout: float) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_group(self.process)
            raise

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    def output(self) -> str:
        return self.log.read_text()


class Cluster:
    """PostgreSQL, an MLflow server on it with artifacts on shared storage, and a head and a worker node."""

    def __init__(self, root: Path, *, data: Path, cpus_per_node: int = 3) -> None:
        self.root, self.data = root, data
        self.shared = root / "shared"  # what both nodes see: the search's storage and MLflow's artifacts
        self.shared.mkdir(parents=True, exist_ok=True)
        self.token = uuid.uuid4().hex + uuid.uuid4().hex
        self.postgres = Postgres()
        self.mlflow: MlflowServer | None = None
        self.head = RayNode(name="head", cpus=cpus_per_node, token=self.token, log_dir=root)
        self.worker = RayNode(name="worker", cpus=cpus_per_node, token=self.token, log_dir=root, head=self.head)

    def start(self) -> Cluster:
        self.postgres.start()
        self.mlflow = MlflowServer(backend=self.postgres.uri, artifacts=self.shared / "mlartifacts",
                                   log=self.root / "mlflow.log").start()  # fmt: skip
        self.head.start()
        self.wait_for_nodes(1)
        self.worker.start()
        self.wait_for_nodes(2)
        return self

    def ray(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "ray"), *args], env=ray_env(self.token), capture_output=True, text=True,
                              timeout=timeout)  # fmt: skip

    def alive_nodes(self) -> list[dict]:
        done = self.ray("list", "nodes", "--address", self.head.dashboard, "--format", "json", "--filter",
                        "state=ALIVE")  # fmt: skip
        try:
            return json.loads(done.stdout) if done.returncode == 0 else []
        except ValueError:  # "No resource in the cluster" while the head is coming up
            return []

    def wait_for_nodes(self, count: int, *, timeout: float = 180) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for node in (self.head, self.worker):
                if node.process is not None and node.process.poll() is not None:
                    raise RuntimeError(f"ray start ({node.name}) exited:\n{node.log.read_text()[-3000:]}")
            nodes = self.alive_nodes()
            if len(nodes) == count:
                return nodes
            time.sleep(1)
        raise RuntimeError(f"{count} Ray node(s) did not come up:\n{self.head.log.read_text()[-3000:]}")

    def _job(self, argv: tuple[str, ...], name: str) -> list[str]:
        """``ray job submit --working-dir <repo>`` of ``python run_tune.py ARGV``, as the README says."""
        return [str(BIN / "ray"), "job", "submit", "--address", self.head.dashboard, "--submission-id", name,
                "--working-dir", str(Path(__file__).resolve().parents[2]), "--",
                "python", "run_tune.py", *argv]  # fmt: skip

    def submit_async(self, *argv: str, name: str) -> Job:
        """The submission, running: its output goes to a file (a pipe nobody reads would stall it)."""
        log = self.root / f"job-{name}.log"
        with open(log, "w") as out:
            process = subprocess.Popen(self._job(argv, name), env=ray_env(self.token), stdout=out,
                                       stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        return Job(process, log)

    def submit(self, *argv: str, name: str, timeout: float = 480) -> subprocess.CompletedProcess:
        command = self._job(argv, name)[1:]
        deadline = time.monotonic() + 60
        while True:
            done = self.ray(*command, timeout=timeout)
            # Right after `ray start` the job agent may not be up yet: Ray says to try again.
            if "No available agent" not in done.stdout + done.stderr or time.monotonic() > deadline:
                (self.root / f"job-{name}.log").write_text(done.stdout + done.stderr)
                return done
            time.sleep(2)

    def stop(self) -> None:
        for part in (self.worker.stop, self.head.stop, self.mlflow.stop if self.mlflow else None, self.postgres.stop):
            if part is not None:
                try:
                    part()
                except Exception as e:  # stop the rest whatever one part says
                    print(f"stopping the cluster: {type(e).__name__}: {e}", file=sys.stderr)
