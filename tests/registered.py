"""A registered model used as its user would: loaded in a fresh process in another folder, and served over HTTP."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from tests.servers import free_port, stop_group, wait_for_http

# Run by a fresh interpreter: the tracking URI is given, nothing else of the search.
_LOAD = """
import sys, mlflow, numpy as np, pandas as pd
uri, ref, inputs, out = sys.argv[1:]
mlflow.set_tracking_uri(uri)
model = mlflow.pyfunc.load_model(ref)
raw = pd.read_csv(inputs) if inputs.endswith(".csv") else np.load(inputs)
model.predict(raw).to_csv(out, index=False)
"""


def predict_elsewhere(uri: str, ref: str, inputs: np.ndarray | pd.DataFrame, *, folder: Path) -> pd.DataFrame:
    """``mlflow.pyfunc.load_model(ref).predict(inputs)`` in a new Python process whose working folder is ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ("inputs.csv" if isinstance(inputs, pd.DataFrame) else "inputs.npy")
    if isinstance(inputs, pd.DataFrame):
        inputs.to_csv(path, index=False)
    else:
        np.save(path, inputs)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MLFLOW_TRACKING_URI")}
    done = subprocess.run([sys.executable, "-c", _LOAD, uri, ref, str(path), str(folder / "predicted.csv")],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return pd.read_csv(folder / "predicted.csv")


@contextlib.contextmanager
def served(uri: str, ref: str, *, log: Path) -> Iterator[str]:
    """``mlflow models serve -m REF --env-manager local`` on a loopback port; yields its base URL, stops its group."""
    port = free_port()
    venv_bin = str(Path(sys.executable).parent)  # mlflow runs uvicorn from PATH
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PATH": f"{venv_bin}:{os.environ.get('PATH', '')}"}
    command = [str(Path(venv_bin) / "mlflow"), "models", "serve", "-m", ref, "--env-manager", "local",
               "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    with open(log, "a") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                   cwd=log.parent)  # fmt: skip
    try:
        wait_for_http(f"http://127.0.0.1:{port}/ping", process=process, log=log, timeout=180)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_group(process)


def invoke(url: str, body: dict) -> list:
    """POST ``body`` to the server's /invocations; its ``predictions``."""
    request = urllib.request.Request(f"{url}/invocations", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=60) as reply:
        return json.loads(reply.read())["predictions"]
