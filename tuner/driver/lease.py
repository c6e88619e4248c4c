"""One driver per search: a lease in the search's folder, renewed by a heartbeat, taken over once it is stale.

``driver.lease`` holds the running driver's host, PID, start time and last
heartbeat. A second driver of the same search (a resubmitted job, a second
``--resume``) reads it and is refused while the heartbeat is fresh, naming the
driver and how to stop it; a lease whose heartbeat is older than ``STALE_S``,
or whose driver is dead on this host, is taken over. It lives beside the
search's other files, so it works on shared storage (NFS, S3) as they do.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

from results import storage
from search_spaces.exceptions import SearchBusy

FILENAME = "driver.lease"
HEARTBEAT_S = 10.0  # how often the running driver renews its lease
STALE_S = 60.0  # a lease not renewed for this long belongs to a driver that is gone
SETTLE_S = 0.5  # after writing its lease, a driver reads it back this much later: two at once, one wins


@dataclass(frozen=True)
class Holder:
    """Who holds a search's lease."""

    host: str
    pid: int
    token: str  # this driver's, unique: two drivers with the same PID on two hosts differ
    started_at: float
    heartbeat_at: float

    def alive_here(self) -> bool | None:
        """Whether its process is alive, when it runs on this host (None: another host, unknown)."""
        if self.host != socket.gethostname():
            return None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # alive, another user's
            return True
        return True

    def stale(self, *, now: float | None = None) -> bool:
        if self.alive_here() is False:
            return True
        return (now if now is not None else time.time()) - self.heartbeat_at > STALE_S

    def describe(self) -> str:
        age = max(0.0, time.time() - self.heartbeat_at)
        started = time.ctime(self.started_at)
        return f"driver PID {self.pid} on {self.host} (started {started}, heartbeat {age:.0f} s ago)"



def read(folder: str) -> Holder | None:
    path = storage.join(folder, FILENAME)
    if not storage.exists(path):
        return None
    try:
        return Holder(**json.loads(storage.read_text(path)))
    except (ValueError, TypeError):  # half-written by a driver that died writing it: nobody holds it
        return None


class Lease:
    """This driver's hold on the search in ``folder``: ``acquire``, then ``release`` (or use as a context manager)."""

    def __init__(self, folder: str, *, name: str) -> None:
        self.folder, self.name = folder, name
        now = time.time()
        self.holder = Holder(host=socket.gethostname(), pid=os.getpid(), token=uuid.uuid4().hex,
                             started_at=now, heartbeat_at=now)  # fmt: skip
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.took_over: Holder | None = None  # the stale holder this driver replaced, if any

    def acquire(self) -> Lease:
        """Hold the search, or raise ``SearchBusy`` while another driver's heartbeat is fresh."""
        held = read(self.folder)
        if held is not None and held.token != self.holder.token and not held.stale():
            raise SearchBusy(self._busy(held))
        self.took_over = held
        self._write()
        time.sleep(SETTLE_S)
        now = read(self.folder)
        if now is None or now.token != self.holder.token:  # another driver wrote after this one: it has it
            raise SearchBusy(self._busy(now) if now else f"search '{self.name}' is being taken by another driver")
        self._thread = threading.Thread(target=self._beat, name="search-lease", daemon=True)
        self._thread.start()
        return self

    def _busy(self, held: Holder) -> str:
        stop = (f"kill -INT {held.pid}" if held.host == socket.gethostname()
                else f"Ctrl-C or `ray job stop` where it runs ({held.host})")  # fmt: skip
        return (
            f"search '{self.name}' is running: {held.describe()}. Stop it first ({stop}), or let it finish; "
            f"--resume takes it over once that driver is gone (its heartbeat older than {STALE_S:.0f} s)"
        )

    def _write(self) -> None:
        self.holder = Holder(**{**asdict(self.holder), "heartbeat_at": time.time()})
        storage.write_text(storage.join(self.folder, FILENAME), json.dumps(asdict(self.holder)))

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                held = read(self.folder)
                if held is not None and held.token != self.holder.token:
                    return  # taken over (this driver was too slow to renew): the new one has it now
                self._write()
            except OSError:  # storage hiccup: the next beat tries again, within STALE_S
                continue

    def release(self) -> None:
        """Stop the heartbeat and remove the lease, if it is still this driver's."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        held = read(self.folder)
        if held is not None and held.token == self.holder.token:
            storage.remove_file(storage.join(self.folder, FILENAME))

    def __enter__(self) -> Lease:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
