"""A search's settings: what it runs with, checked before anything starts. No Ray here.

- ``settings``: ``SearchSettings`` (what ``search.json`` saves and ``--resume`` reads back),
  the scheduler and searcher names, storage and tracking URIs resolved.
- ``resources``: what a trial asks of the cluster (CPUs, a GPU share, DDP workers) and
  whether the machine can meet it; the start timeout for DDP workers.
- ``checks``: ``make_settings(space, *, cwd, ...)``, every check the Python API and the
  command line share, with messages that name the fix.
"""
