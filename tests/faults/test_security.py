"""Servers bind to 127.0.0.1 unless asked otherwise; checkpoints cannot run code when loaded."""

import pickle
import re

import pytest

from tests.conftest import ROOT
from trainables import checkpoint


def test_mlflow_ui_binds_to_localhost_by_default():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^HOST \?= 127\.0\.0\.1$", makefile, re.M)
    target = makefile.split("mlflow-ui:", 1)[1].split("\n\n", 1)[0]
    assert "--host $(HOST)" in target


def test_ray_is_started_without_a_public_dashboard():
    source = (ROOT / "tuner" / "driver" / "runner.py").read_text()
    init = source.split("def init_ray", 1)[1].split("\ndef ", 1)[0]
    assert "ray.init(" in init and "dashboard_host" not in init  # Ray's default: 127.0.0.1


class _Exploit:
    def __reduce__(self):
        return (print, ("this ran while loading a checkpoint",))


def test_a_checkpoint_cannot_run_code(tmp_path, capsys):
    with open(tmp_path / checkpoint.FILENAME, "wb") as f:
        pickle.dump({"model": _Exploit()}, f)
    with pytest.raises(pickle.UnpicklingError):
        checkpoint.load(tmp_path)
    assert "this ran" not in capsys.readouterr().out
