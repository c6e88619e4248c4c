import http.server
import json
import threading
import time
from pathlib import Path

import pytest

from search_spaces import SpaceError
from search_spaces.exceptions import UsageError
from tuner.cli import build_parser, settings_from_args
from tuner.config.settings import SearchSettings, check_gpus_per_trial, resolve_storage, resolve_tracking_uri


def test_tracking_uri_is_always_absolute(tmp_path):
    assert resolve_tracking_uri(None, cwd=tmp_path) == f"sqlite:///{tmp_path}/mlflow.db"
    assert resolve_tracking_uri("sqlite:///rel.db", cwd=tmp_path) == f"sqlite:///{tmp_path}/rel.db"
    assert resolve_tracking_uri("x.db", cwd=tmp_path) == f"sqlite:///{tmp_path}/x.db"
    with pytest.raises(UsageError, match="not a tracking URI"):
        resolve_tracking_uri("mlruns", cwd=tmp_path)
    with pytest.raises(UsageError, match="does not exist or is not writable"):
        resolve_tracking_uri("sqlite:///missing/dir/m.db", cwd=tmp_path)


def test_unreachable_server_is_detected_fast():
    from tuner.config.settings import tracking_unreachable

    start = time.monotonic()
    assert tracking_unreachable("http://127.0.0.1:9", timeout=2)
    assert time.monotonic() - start < 10
    assert tracking_unreachable("sqlite:////tmp/x.db") is None


def test_reachable_server_is_accepted(tmp_path):
    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"OK")

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        uri = f"http://127.0.0.1:{server.server_port}"
        assert resolve_tracking_uri(uri, cwd=tmp_path) == uri
        from tuner.config.settings import tracking_unreachable

        assert tracking_unreachable(uri) is None
    finally:
        server.shutdown()


@pytest.mark.parametrize("value", [-1.0, 1.5, float("nan")])
def test_bad_gpu_requests(value):
    with pytest.raises(UsageError, match="--gpus-per-trial"):
        check_gpus_per_trial(value)


def test_good_gpu_requests():
    assert [check_gpus_per_trial(v) for v in (0.0, 0.25, 1.0, 2.0)] == [0.0, 0.25, 1.0, 2.0]


def test_storage_resolution(tmp_path):
    assert resolve_storage("runs", cwd=tmp_path) == str(tmp_path / "runs")
    assert resolve_storage("s3://bucket/x", cwd=tmp_path) == "s3://bucket/x"
    (tmp_path / "f").write_text("")
    with pytest.raises(UsageError, match="not writable"):
        resolve_storage("f/runs", cwd=tmp_path)


def _settings(tmp_path: Path, *argv: str) -> SearchSettings:
    return settings_from_args(build_parser().parse_args(list(argv)), cwd=tmp_path)


def test_flags_resolve_to_settings(tmp_path):
    s = _settings(tmp_path, "--name", "x", "--num-samples", "3", "--param", "lr=5")
    assert (s.budget.num_samples, s.budget.max_epochs) == (3, 10)  # the rest from the space's budget
    assert s.folder == str(tmp_path / "ray_results" / "x")
    assert s.data_dir == str(tmp_path / "data") and s.run.mlflow_uri.startswith("sqlite:////")
    smoke = _settings(tmp_path, "--smoke-test")
    assert smoke.budget.num_samples == 6 and smoke.name.startswith("cifar-")
    assert smoke.space().param("width").choices == (0.125, 0.25)
    assert SearchSettings.from_json(s.to_json()) == s
    assert s.resources.gpus_per_trial == "default"  # resolved once Ray shows whether there are GPUs
    assert _settings(tmp_path, "--gpus-per-trial", "0").resources.gpus_per_trial == 0.0
    assert _settings(tmp_path, "--gpus-per-trial", "AUTO").resources.gpus_per_trial == "auto"


def test_settings_split_into_budget_resources_and_run(tmp_path):
    s = _settings(tmp_path, "--name", "x", "--max-failures", "4", "--cpus-per-trial", "2", "--grace-period", "2")
    saved = json.loads(s.to_json())
    assert saved["budget"]["grace_period"] == 2 and saved["resources"]["cpus_per_trial"] == 2.0
    assert saved["run"]["max_failures"] == 4 and saved["run"]["name"] == "x"
    assert "max_failures" not in saved  # each setting lives in one part
    params = s.mlflow_params()  # flat in MLflow, as the UI compares them
    assert (params["grace_period"], params["cpus_per_trial"], params["max_failures"]) == (2, 2.0, 4)
    assert "resume" not in params and "mlflow_run_id" not in params
    # A search.json written before the split (every setting at the top level) still resumes.
    flat = {k: v for part in ("budget", "resources", "run") for k, v in saved.pop(part).items()} | saved
    assert SearchSettings.from_json(json.dumps(flat)) == s


def test_sync_takes_only_the_tracking_uri(tmp_path, capsys):
    from tuner.cli import main

    assert main(["--sync", str(tmp_path), "--num-samples", "3"]) == 2
    assert "--sync takes only --mlflow-uri; drop --num-samples" in capsys.readouterr().err
    assert main(["--sync", str(tmp_path / "absent")]) == 1
    assert "no search.json in" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--grace-period", "20"], "--grace-period is 20"),
        (["--reduction-factor", "1"], "--reduction-factor is 1"),
        (["--cpus-per-trial", "0"], "--cpus-per-trial is 0"),
        (["--name", "../evil"], "--name '../evil'"),
        (["--resume"], "--resume needs --name"),
        (["--resume", "--name", "ghost"], "no search 'ghost'"),
    ],
)
def test_bad_flags(tmp_path, argv, message):
    with pytest.raises((UsageError, SpaceError), match=message):
        _settings(tmp_path, *argv)


def test_existing_name_needs_resume(tmp_path):
    (tmp_path / "ray_results" / "taken").mkdir(parents=True)
    with pytest.raises(UsageError, match="already exists.*--resume"):
        _settings(tmp_path, "--name", "taken")


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("http://alice:s3cret@mlflow:5000", "http://alice:***@mlflow:5000"),
        ("https://host/path?token=abc&x=1", "https://host/path?token=***&x=1"),
        ("s3://bucket/x?X-Amz-Signature=abcd", "s3://bucket/x?X-Amz-Signature=***"),
        ("sqlite:////tmp/mlflow.db", "sqlite:////tmp/mlflow.db"),
    ],
)
def test_credentials_never_reach_logs(uri, shown):
    from tuner.config.settings import redact

    assert redact(uri) == shown
