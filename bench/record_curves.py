"""Record a learning-curve table: many configs of a real space, each trained to the full budget.

The table is what ``bench/simulate.py`` replays through the project's
schedulers and searchers in simulated time (``bench/efficiency.py --table``).
Every config is drawn at random from the space and trained for every epoch of
the budget by a real search (``tuner.search``, ``--scheduler fifo``); each
epoch's score and its seconds are read back from the trials' progress.csv.

The default table is the tabular example (``examples/tabular``, an MLP) on
scikit-learn's bundled handwritten digits (1,797 rows, 64 pixel columns, 10
classes; scikit-learn comes with MLflow), so it can be recorded again on any
machine without a download:

    python bench/record_curves.py --out bench/curves/digits          # 300 configs x 27 epochs, 5 min on 2 CPUs
    python bench/record_curves.py --space cifar --data-dir data --configs 64 --max-epochs 10 --out DIR  # on a GPU

Any space can be recorded with ``--space`` and ``--data-dir`` (its reference
config is left out: every config is drawn at random).

It writes ``DIR/curves.csv.gz`` (a row per config and epoch: the config's
parameters, ``epoch``, the metrics, ``seconds``) and ``DIR/provenance.json``
(the command, the machine, the versions, the data's SHA-256, the space).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import io
import json
import shlex
import sys
import tempfile
from pathlib import Path

import pandas as pd
import yaml
from common import ROOT, machine

import results
from search_spaces import BUILTIN_DIR, is_path

TABULAR_SPACE = ROOT / "examples" / "tabular" / "space.yaml"
SKIPPED = ("val_acc_tta0", "val_loss_tta0")  # the cifar task's cheaper scores: FIFO scores every epoch exactly
CURVES = "curves.csv.gz"
PROVENANCE = "provenance.json"


def digits_table(path: Path) -> dict:
    """Write scikit-learn's digits as a CSV the tabular task reads; return what it is."""
    try:
        from sklearn import __version__ as sklearn_version
        from sklearn.datasets import load_digits
    except ImportError:
        raise SystemExit("scikit-learn is needed to write the digits table: pip install scikit-learn") from None
    frame = load_digits(as_frame=True).frame
    frame.to_csv(path, index=False)
    return {"name": "sklearn.datasets.load_digits", "sklearn": sklearn_version, "rows": len(frame),
            "columns": len(frame.columns), "target": "target",
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}  # fmt: skip


def space_file(path: Path, *, source: Path | None, max_epochs: int, configs: int) -> str:
    """``source`` (default: the tabular example's space, classifying the digits' ``target``) without its reference
    config, over ``max_epochs`` epochs."""
    raw = yaml.safe_load((source or TABULAR_SPACE).read_text())
    raw.pop("reference", None)  # every config drawn at random, none given first
    if source is None:
        raw["name"] = "digits"
        raw["constants"] = {"target": "target", "problem": "classification"}
    raw["budget"] = {"num_samples": configs, "max_epochs": max_epochs, "grace_period": 1, "reduction_factor": 3}
    text = yaml.safe_dump(raw, sort_keys=False)
    path.write_text(text)
    return text


def curves(folder: str, params: list[str]) -> pd.DataFrame:
    """A row per trial and epoch: ``config`` (its number), the parameters, ``epoch``, the ``val_*`` scores,
    ``seconds``."""
    frame = results.load_results(folder)
    histories = results.load_histories(frame)
    rows = []
    for number, (_, trial) in enumerate(frame.sort_values("trial_id").iterrows()):
        history = histories.get(trial["trial_id"])
        if history is None or history.empty:
            continue
        values = {p: trial.get(f"config/{p}") for p in params}
        metrics = [c for c in history.columns if c.startswith("val_") and c not in SKIPPED]
        for _, epoch in history.iterrows():
            scores = {m: float(epoch[m]) for m in metrics if isinstance(epoch[m], int | float)}
            rows.append({"config": number, **values, "epoch": int(epoch["epoch"]), **scores,
                         "seconds": float(epoch["time_this_iter_s"])})  # fmt: skip
    return pd.DataFrame(rows)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="folder to write curves.csv.gz and provenance.json in")
    p.add_argument("--configs", type=int, default=300, help="configs to record (default 300)")
    p.add_argument("--max-epochs", type=int, default=27, help="epochs each config trains (default 27)")
    p.add_argument("--seed", type=int, default=0, help="the search's seed (the configs drawn; default 0)")
    p.add_argument("--space", default=None, help="a built-in space's name or a space file (default: the tabular "
                   "example on scikit-learn's digits)")  # fmt: skip
    p.add_argument("--data-dir", default=None, help="with --space: its data")
    p.add_argument("--gpus-per-trial", default=None, help="with --space: as the search's flag (default: auto)")
    p.add_argument("--smoke-test", action="store_true", help="with --space: on the space's smoke slice of the data")
    p.add_argument("--concurrent", type=int, default=None, help="trials at once (default: one per CPU)")
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    import tuner

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.space is None:
            data_dir, dataset = str(work / "digits.csv"), digits_table(work / "digits.csv")
            source = None
        else:
            if not args.data_dir:
                p.error("--space needs --data-dir")
            data_dir = str(Path(args.data_dir).resolve())
            dataset = {"name": args.space, "data_dir": args.data_dir}
            source = Path(args.space) if is_path(args.space) else BUILTIN_DIR / f"{args.space}.yaml"
        space_text = space_file(work / "space.yaml", source=source, max_epochs=args.max_epochs, configs=args.configs)
        started = datetime.datetime.now(datetime.UTC)
        log = io.StringIO()
        result = tuner.search(str(work / "space.yaml"), data_dir=data_dir, name="curves", scheduler="fifo",
                              gpus_per_trial=args.gpus_per_trial, storage_path=str(work / "runs"),
                              mlflow_uri=f"sqlite:///{work / 'mlflow.db'}", seed=args.seed,
                              num_samples=args.configs, max_epochs=args.max_epochs, grace_period=1,
                              smoke_test=args.smoke_test, max_concurrent=args.concurrent, keep_trials=1,
                              out=log)  # fmt: skip
        ran_with = json.loads(Path(result.folder, "provenance.json").read_text())  # data and code keys, versions
        searched = result.settings.space()  # the smoke test's narrower choices, where --smoke-test is given
        params = [q.name for q in searched.params if q.kind != "fixed"]
        table = curves(result.folder, params)
    incomplete = table.groupby("config")["epoch"].max() < args.max_epochs
    if incomplete.any():
        print(f"{int(incomplete.sum())} config(s) did not train every epoch (failed or diverged): kept as they are")
    table.to_csv(out / CURVES, index=False, float_format="%.6g")
    provenance = {
        "command": "python bench/record_curves.py " + shlex.join(sys.argv[1:] if argv is None else argv),
        "recorded": started.isoformat(timespec="seconds"),
        "machine": machine(),
        "git_commit": ran_with.get("git_commit", "unknown"),
        "data_key": ran_with.get("data_key"),  # SHA-256 of the trials' data, as `python -m results replay` keys it
        "code_key": ran_with.get("code_key"),
        "versions": ran_with.get("versions"),
        "dataset": dataset,
        "task": yaml.safe_load(space_text).get("task", ""),
        "metric": result.settings.metric,
        "mode": result.settings.mode,
        "params": params,
        "smoke_test": args.smoke_test,
        "max_epochs": args.max_epochs,
        "configs": int(table["config"].nunique()),
        "search": {"scheduler": "fifo", "searcher": "random", "seed": args.seed,
                   "concurrent": args.concurrent or "one per CPU"},  # fmt: skip
        "seconds": "each epoch's time_this_iter_s: training and validation, as the trial reported it",
        "space": space_text,
    }
    (out / PROVENANCE).write_text(json.dumps(provenance, indent=2) + "\n")
    print(f"wrote {len(table)} rows ({provenance['configs']} configs x up to {args.max_epochs} epochs) to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
