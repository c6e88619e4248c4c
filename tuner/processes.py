"""The processes below this one, read from ``/proc`` (Linux): for stopping everything a command started."""

from __future__ import annotations

import os
from typing import NamedTuple


class Proc(NamedTuple):
    """A line of ``/proc/<pid>/stat``: what the walk needs."""

    ppid: int
    pgid: int
    state: str
    start: int  # clock ticks after boot: with the PID, names a process even if the PID is reused


def process_table() -> dict[int, Proc]:
    """Every process on the machine, from ``/proc/<pid>/stat``."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                line = f.read()
        except OSError:  # it ended while we looked
            continue
        fields = line.rpartition(")")[2].split()  # the command name before ")" may hold spaces
        table[int(entry.name)] = Proc(int(fields[1]), int(fields[2]), fields[0], int(fields[19]))
    return table


def descendants(root: int, *, table: dict[int, Proc]) -> set[int]:
    """The PIDs below ``root`` in ``table``, ``root`` excluded."""
    children: dict[int, list[int]] = {}
    for pid, proc in table.items():
        children.setdefault(proc.ppid, []).append(pid)
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found
