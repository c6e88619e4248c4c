"""One driver per search: the lease refuses a second driver while the first is alive and lets --resume take over."""

import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from search_spaces.exceptions import SearchBusy
from tuner.driver import lease as lease_module
from tuner.driver.lease import FILENAME, Lease, read


def test_a_second_driver_is_refused_naming_the_first_and_how_to_stop_it(tmp_path):
    first = Lease(str(tmp_path), name="x").acquire()
    try:
        with pytest.raises(SearchBusy) as refused:
            Lease(str(tmp_path), name="x").acquire()
        said = str(refused.value)
        assert f"search 'x' is running: driver PID {os.getpid()} on {socket.gethostname()}" in said
        assert f"kill -INT {os.getpid()}" in said and "--resume takes it over once that driver is gone" in said
    finally:
        first.release()
    assert not (tmp_path / FILENAME).exists()  # released: the next driver may start
    Lease(str(tmp_path), name="x").acquire().release()


def test_the_lease_of_a_dead_driver_on_this_host_is_taken_over_at_once(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    now = time.time()
    holder = {"host": socket.gethostname(), "pid": dead.pid, "token": "old", "started_at": now, "heartbeat_at": now}
    (tmp_path / FILENAME).write_text(json.dumps(holder))
    taken = Lease(str(tmp_path), name="x").acquire()
    try:
        assert taken.took_over is not None and taken.took_over.pid == dead.pid
        assert read(str(tmp_path)).token == taken.holder.token
    finally:
        taken.release()


def test_another_hosts_lease_is_taken_over_only_once_its_heartbeat_is_stale(tmp_path):
    fresh = time.time()
    holder = {"host": "elsewhere", "pid": 1, "token": "theirs", "started_at": fresh, "heartbeat_at": fresh}
    (tmp_path / FILENAME).write_text(json.dumps(holder))
    with pytest.raises(SearchBusy, match="where it runs \\(elsewhere\\)"):
        Lease(str(tmp_path), name="x").acquire()
    holder["heartbeat_at"] = fresh - lease_module.STALE_S - 1
    (tmp_path / FILENAME).write_text(json.dumps(holder))
    Lease(str(tmp_path), name="x").acquire().release()


def test_the_heartbeat_keeps_a_long_search_held(tmp_path, monkeypatch):
    monkeypatch.setattr(lease_module, "HEARTBEAT_S", 0.1)
    held = Lease(str(tmp_path), name="x").acquire()
    try:
        first = read(str(tmp_path)).heartbeat_at
        time.sleep(0.5)
        assert read(str(tmp_path)).heartbeat_at > first
    finally:
        held.release()


def test_two_drivers_starting_at_once_one_wins(tmp_path):
    won, lost = [], []

    def start():
        try:
            won.append(Lease(str(tmp_path), name="x").acquire())
        except SearchBusy as e:
            lost.append(e)

    threads = [threading.Thread(target=start) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert len(won) == 1 and len(lost) == 1
        assert read(str(tmp_path)).token == won[0].holder.token
    finally:
        for held in won:
            held.release()
