"""A connection to an MLflow tracking store that never fails the search it tracks.

``ResilientClient`` is the base of the search's tracker (``tuner.tracking.runs``):
each method marked ``@tracked`` is one call to the store, retried with backoff
when it fails, skipped when the store refuses it, and kept for later while the
store is unreachable; the kept calls are replayed, in order, once it answers.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import io
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from results import storage
from tuner.config.settings import redact, tracking_unreachable

TRACKING_LOG = "tracking.log"  # what MLflow's client prints, kept out of the search's output
RETRY_DELAYS_S = (0.5, 1.0, 2.0)  # a failed call is tried again after each of these
RECONNECT_S = 30.0  # while the server is unreachable, how often a call tries it again
# What a server that answered says about a call it will never accept: no retry helps.
REFUSALS = ("INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "RESOURCE_ALREADY_EXISTS", "INVALID_STATE",
            "BAD_REQUEST", "PERMISSION_DENIED", "UNAUTHENTICATED", "ENDPOINT_NOT_FOUND")  # fmt: skip
MAX_PENDING = 100_000  # calls kept for the server's return; beyond that, --sync has the rest

for noisy in ("alembic", "mlflow.store.db.utils", "mlflow.tracking.fluent"):
    logging.getLogger(noisy).setLevel(logging.WARNING)


def fail_fast() -> None:
    """One failed call to an MLflow server costs seconds, not the minutes of MLflow's own retries with backoff.

    The tracker retries and waits out outages itself (RETRY_DELAYS_S, RECONNECT_S);
    ``--sync`` to a server that is down says so at once.
    """
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")


def open_store(uri: str, *, create: bool) -> threading.Thread | None:
    """Open a local SQLite store in a thread (0.5-1 s; making its tables, 2-3 s more); join it before tracking.

    The search starts Ray, or waits out its lease, meanwhile. ``create`` False:
    only a store whose file exists (the search's checks may still refuse it, and
    a refused search writes nothing). None when there is nothing to open. A store
    that fails to open here fails again, and is reported, when the tracker opens it.
    """
    path = uri.removeprefix("sqlite:///") if uri.startswith("sqlite:///") else None
    if path is None or not (create or os.path.exists(path)):
        return None

    def open_it() -> None:
        with contextlib.suppress(Exception):  # the tracker's own first call says what is wrong
            MlflowClient(tracking_uri=uri).search_experiments(max_results=1)

    thread = threading.Thread(target=open_it, name="mlflow-store", daemon=True)
    thread.start()
    return thread


def tracked(method):
    """A tracking call that never fails the search (see ``ResilientClient``)."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        return self._call(method, args, kwargs)

    return wrapper


def _reason(error: BaseException) -> str:
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {text}"


def artifact_location(uri: str) -> str | None:
    """For a local SQLite store, keep artifacts beside the database (not in the process's cwd)."""
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri()
    return None


class ResilientClient:
    """An MLflow client at ``uri`` whose ``@tracked`` calls survive a refusal or an outage of the store.

    A failed call is retried with backoff (``RETRY_DELAYS_S``). If the server
    then answers, the call itself was refused: it is skipped with a warning and
    tracking goes on. If the server does not answer, the client goes offline:
    calls are kept, in order, and every ``RECONNECT_S`` seconds the next call
    tries the server again; once it answers, the kept calls are replayed and
    tracking goes on where it was. What is still kept at ``close`` is in
    ``folder`` for ``run_tune.py --sync``, and what MLflow's client printed is in
    its ``tracking.log``.
    """

    def __init__(self, *, uri: str, folder: str = "", offline_reason: str | None = None) -> None:
        fail_fast()
        self.uri = uri
        self.folder = folder
        self.offline = False
        self.retry_delays: tuple[float, ...] = RETRY_DELAYS_S
        self._client: MlflowClient | None = None
        self._pending: collections.deque = collections.deque()
        self._dropped = 0  # calls beyond MAX_PENDING
        self._last_try = 0.0
        self._last_reason = ""
        self._said = io.StringIO()
        if offline_reason:
            self.go_offline(offline_reason)

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    def __getstate__(self) -> dict[str, Any]:
        # Tune may pickle its callbacks with the run config; a client holds a DB engine.
        return {**self.__dict__, "_client": None, "_pending": collections.deque(), "_said": io.StringIO()}

    def go_offline(self, reason: str) -> None:
        """Keep calls for later instead of sending them, and say so once per outage."""
        if self.offline:
            return
        self.offline = True
        self._last_try = time.monotonic()
        print(
            f"warning: MLflow at {redact(self.uri)} is unreachable ({reason}); the search goes on, keeps everything "
            f"in {self.folder or 'its folder'}, and tries MLflow again every {RECONNECT_S:.0f} s",
            file=sys.stderr,
            flush=True,
        )

    def _reachable(self) -> bool:
        if self.uri.startswith(("http://", "https://")):
            return tracking_unreachable(self.uri, timeout=3.0) is None
        try:
            self.client.search_experiments(max_results=1)
        except Exception:  # whatever the store's client raises
            return False
        return True

    def _attempt(self, method, args, kwargs) -> tuple[bool, Any]:
        """(True, result), or (False, None) when the server is unreachable; a refused call is skipped."""
        for delay in (*self.retry_delays, None):
            try:
                # MLflow's client prints ("View run ... at", "Successfully registered"): kept for tracking.log.
                with contextlib.redirect_stdout(self._said), contextlib.redirect_stderr(self._said):
                    return True, method(self, *args, **kwargs)
            except Exception as e:  # any failure of the tracking store, whatever its client raises
                error = e
            # The server answered and said no, or still answers: the call itself is refused.
            answered = getattr(error, "error_code", None) in REFUSALS or self._reachable()
            if not answered:
                self._last_reason = _reason(error)
                return False, None
            if delay is None or getattr(error, "error_code", None) in REFUSALS:
                break
            time.sleep(delay)
        print(f"warning: MLflow refused {method.__name__} ({_reason(error)}); skipped", file=sys.stderr)
        return True, None

    def _call(self, method, args, kwargs) -> Any:
        if not self.offline:
            done, result = self._attempt(method, args, kwargs)
            if done:
                return result
            self.go_offline(self._last_reason)
        if len(self._pending) < MAX_PENDING:
            self._pending.append((method, args, kwargs))
        else:
            self._dropped += 1
        if time.monotonic() - self._last_try >= RECONNECT_S:
            self.reconnect()
        return None

    def reconnect(self) -> bool:
        """Replay the kept calls if the server answers again; True when nothing is left to send."""
        if not self.offline:
            return True
        self._last_try = time.monotonic()
        if not self._reachable():
            return False
        sent = 0
        delays, self.retry_delays = self.retry_delays, ()  # one try each: the server has just answered
        try:
            while self._pending:
                method, args, kwargs = self._pending[0]
                done, _ = self._attempt(method, args, kwargs)
                if not done:
                    return False
                self._pending.popleft()
                sent += 1
        finally:
            self.retry_delays = delays
        self.offline = False
        lost = f"; {self._dropped} more were not kept (--sync adds them)" if self._dropped else ""
        print(f"MLflow at {redact(self.uri)} answers again: {sent} tracking calls caught up{lost}", file=sys.stderr)
        return True

    def close(self) -> None:
        """A last reconnect, MLflow's output kept in tracking.log, and the ``--sync`` command if still offline."""
        if self.offline:
            self.reconnect()
        self.keep_log()
        if self.offline:
            print(
                f"warning: MLflow never answered again; push the search to it with: python run_tune.py --sync "
                f"{self.folder}",
                file=sys.stderr,
                flush=True,
            )

    def keep_log(self) -> None:
        """Append what MLflow's client printed to the search's tracking.log."""
        text, self._said = self._said.getvalue(), io.StringIO()
        if not text or not self.folder:
            return
        path = storage.join(self.folder, TRACKING_LOG)
        storage.write_text(path, (storage.read_text(path) if storage.exists(path) else "") + text)
