"""The driver: the process that runs a search on Ray Tune, from start to its end.

- ``runner``: ``run_search(settings)``: data, Ray, the Tuner with its scheduler, searcher
  and callbacks, resume; raises ``Interrupted`` when stopped with its state saved.
- ``space``: a search space (plain data) as Tune's ``param_space`` and Optuna's searcher.
- ``bohb``: ``--search bohb``, BOHB's model (TPE) fitted at ASHA's rungs.
- ``warm``: warm starts, a new search seeded with a finished one's best configs.
- ``progress``: the one compact progress table printed instead of Ray's output.
- ``stopping``: Ctrl-C and SIGTERM stop the driver within a bound, state saved.
- ``lease``: one driver per search, a heartbeat in the search's folder.
- ``finish``: the end: confirm, test the best once, register, results and report.
- ``confirm``: ``--confirm K``, the top configs retrained over more seeds.
- ``summary``: Tune's ``ResultGrid`` as rows, the best trial, failed trials, pruning.
- ``provenance``: package versions, git commit, and the keys of the data and code.
"""
