"""Stopping always stops: once Ctrl-C or SIGTERM reaches a search, the driver is gone within a bound.

Tune answers the signal by ending its loop, saving its state and stopping the
trials, which takes seconds. Where that does not end (a trial stuck starting
its worker group, a process that ignores the stop), ``StopBound`` forces the
driver down after ``STOP_BOUND_S``: it says so with the command that resumes
the search, kills every process this driver started (the local Ray instance
and its workers) and exits with status 130. What Tune last saved is kept, as
after a killed driver, and ``--resume`` continues from it.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Any

from tuner.processes import descendants, process_table

STOP_BOUND_S = float(os.environ.get("HPSEARCH_STOP_BOUND_S", "30"))  # seconds from the signal to the exit
EXIT_INTERRUPTED = 130  # as a shell reports a command stopped by Ctrl-C


class StopBound:
    """Around ``tuner.fit()``: notices Tune's answer to a stop signal and bounds how long the stop may take.

    Tune's SIGINT handler, when it runs, puts back the handler it found; this
    watches for that (from a thread: Tune owns the signal while it runs).
    """

    def __init__(self, *, resume_command: str, before: Any, bound_s: float | None = None) -> None:
        self.resume_command = resume_command
        self.bound_s = STOP_BOUND_S if bound_s is None else bound_s
        self._done = threading.Event()
        self._before = before  # the SIGINT handler installed before Tune's: it comes back when Tune's runs

    def __enter__(self) -> StopBound:
        threading.Thread(target=self._watch, name="stop-bound", daemon=True).start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._done.set()

    def _watch(self) -> None:
        tune_owns, noticed = False, None
        while not self._done.wait(0.2):
            if noticed is None:
                now_handled = signal.getsignal(signal.SIGINT)
                tune_owns = tune_owns or now_handled is not self._before  # Tune installed its handler
                if tune_owns and now_handled is self._before:
                    noticed = time.monotonic()  # ... and it ran: the search is stopping
            if noticed is not None and time.monotonic() - noticed > self.bound_s:
                self.force()

    def force(self) -> None:
        """Say why, kill every process this driver started, and exit at once (130)."""
        print(
            f"\nthe search did not stop within {self.bound_s:.0f} s of the stop signal (a trial stuck starting or "
            f"training): stopping its processes now. What it last saved is kept; resume it with:\n  "
            f"{self.resume_command}",
            file=sys.stderr,
            flush=True,
        )
        kill_descendants()
        os._exit(EXIT_INTERRUPTED)


def _tune_catches() -> bool:
    """Whether Tune answers SIGINT in this process (it installs its handler on the main thread only)."""
    return threading.current_thread() is threading.main_thread() and not os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")


def stop_fit() -> bool:
    """From inside ``fit`` (a Tune callback): stop the search as Ctrl-C does, its state saved for ``--resume``.

    False where Tune does not catch the signal: nothing is sent then.
    """
    if not _tune_catches():
        return False
    signal.raise_signal(signal.SIGINT)
    return True


def fit(tuner: Any, *, resume_command: str) -> tuple[Any, bool]:
    """``tuner.fit()`` under a ``StopBound``, and whether Ctrl-C (or SIGTERM, which raises it) stopped it.

    Tune answers the signal by ending its loop, saving its state, and then
    stopping every trial, which leaves them all TERMINATED: their statuses
    cannot tell an interrupted search from a finished one. Tune's handler puts
    back the SIGINT handler it found when it runs, and only then; after a
    normal end its own handler is still installed (it is put back here, so a
    Ctrl-C during the finish does not go to Tune's finished loop).
    """
    if not _tune_catches():  # Tune installs no handler off the main thread: nothing to watch
        return tuner.fit(), False
    before = signal.getsignal(signal.SIGINT)
    with StopBound(resume_command=resume_command, before=before):
        grid = tuner.fit()
    stopped = signal.getsignal(signal.SIGINT) is before
    signal.signal(signal.SIGINT, before)
    return grid, stopped


def kill_descendants() -> None:
    """SIGKILL every process below this one (a local Ray instance, its workers, what they started)."""
    for _ in range(3):  # a dying parent's children are re-read: none escapes by being started late
        below = descendants(os.getpid(), table=process_table())
        if not below:
            return
        for pid in below:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)
