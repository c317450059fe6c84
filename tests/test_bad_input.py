"""Bad input to both CLIs: exit 2, one message naming the file/field/flag, no traceback,
and nothing left behind (no tune_lm_runs/, no mlflow.db, no cache, no model.pt).

Every case is a real subprocess started in an empty folder, with the caches, the data
folder and even $HOME pointed inside that folder, so anything written shows up. Each one
fails during validation, before Ray or MLflow start.
"""


from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import bad_input_models
import bad_input_search
import bad_input_train
import pytest
from bad_input_kit import GOOD_SPACE, MARKER
from cli_run import run_cli

# Every test here runs a command in a subprocess (seconds each): not in the fast tier.
pytestmark = pytest.mark.slow

CASES = bad_input_search.CASES + bad_input_train.CASES + bad_input_models.CASES


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Ray's own per-user token (token authentication is on): made once per user by the first
# local Ray, like a config file; a case that had to start Ray may leave it in $HOME.
RAY_USER_FILES = {"home", "home/.ray", "home/.ray/auth_token"}


def snapshot(folder: Path) -> set[str]:
    """Every path under ``folder``, a file with a digest of its bytes (so that a file
    overwritten, not only one added, shows)."""
    found = set()
    for path in folder.rglob("*"):
        name = str(path.relative_to(folder))
        if name in RAY_USER_FILES:
            continue
        if path.is_file() and not path.is_symlink():
            name += ":" + hashlib.sha1(path.read_bytes()).hexdigest()
        found.add(name)
    return found


def _env(folder: Path) -> dict[str, str]:
    # Without pytest's and CI's markers too: MLflow turns its telemetry (which writes to
    # $HOME) off when it sees them, and a user's shell has none of them.
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS", "PYTEST_CURRENT_TEST", "CI",
                        "GITHUB_ACTIONS", "GITLAB_CI", "CIRCLECI", "JENKINS_URL", "TRAVIS",
                        "BUILDKITE", "MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK")}  # fmt: skip
    # Everything a run could write to is inside the case's folder, and must stay absent.
    env.update(
        TUNE_LM_CACHE_DIR=str(folder / "cache"),
        TUNE_LM_DATA_DIR=str(folder / "data_dir"),
        HOME=str(folder / "home"),
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.mark.parametrize("case", [pytest.param(case, id=case.id, marks=case.marks)
                                  for case in CASES])  # fmt: skip
def test_bad_input_exits_2_naming_the_problem_and_leaves_nothing(tmp_path, case):
    for name, content in case.files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    port = str(free_port())
    args = [arg.replace("{port}", port) for arg in case.args]
    before = snapshot(tmp_path)

    done = run_cli(case.cli, *args, cwd=tmp_path, env=_env(tmp_path), timeout=60)

    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert len(done.stderr) < 4000, done.stderr[:4000]  # one paragraph, nothing echoed in bulk
    for expected in case.expected:
        assert expected in done.stderr, done.stderr
    assert not (tmp_path / MARKER).exists()
    if any(":secret@" in arg for arg in case.args):  # a password is never printed
        assert "secret" not in done.stdout + done.stderr, done.stderr
    after = {path for path in snapshot(tmp_path) if not path.startswith(case.may_leave or "\0")}
    assert after == before, done.stderr


def test_cases_cover_both_clis():
    assert len(CASES) >= 30 and len({case.id for case in CASES}) == len(CASES)
    assert {case.cli for case in CASES} >= {"search", "train"}


def test_a_listening_address_passes_the_check():
    from tune_lm.tuning.tuner import check_address

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        check_address(f"127.0.0.1:{port}")
        check_address(f"ray://localhost:{port}")


@pytest.mark.parametrize("address", ["auto", None])
def test_a_dead_cluster_left_behind_never_hangs_a_search(tmp_path, address):
    """`ray start` records its cluster in Ray's temp folder, and the record outlives the
    cluster. A search without --address must start its own Ray (here: the trial asks for
    more CPUs than the new local Ray has, which it then reports); --address auto must
    fail within seconds. Neither may hang on the dead address."""
    import tempfile

    ray_tmp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # short: Ray's socket paths
    (ray_tmp / "ray").mkdir()
    (ray_tmp / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{free_port()}")
    (tmp_path / "space.yaml").write_text(GOOD_SPACE)
    args = ["--space", "space.yaml", "--cpus-per-trial", "512"]
    if address:
        args += ["--address", address]
    env = {**_env(tmp_path), "RAY_TMPDIR": str(ray_tmp)}
    before = snapshot(tmp_path)
    try:
        started = time.monotonic()
        done = run_cli("search", *args, cwd=tmp_path, env=env, timeout=90)
        seconds = time.monotonic() - started
    finally:
        subprocess.run(["pkill", "-9", "-f", str(ray_tmp)], capture_output=True)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    expected = "--address auto" if address else "--cpus-per-trial"
    assert expected in done.stderr, done.stderr[-3000:]
    assert seconds < 60, seconds
    assert snapshot(tmp_path) == before



def test_resuming_with_a_saved_space_this_version_refuses_names_it(tmp_path):
    """A space saved before a check existed (here reduction_factor 1.5) is a clear error on
    --resume, not a pydantic traceback."""
    from tune_lm.lm.errors import ConfigError
    from tune_lm.tuning.experiment import read_pinned
    from tune_lm.tuning.layout import SPACE_FILE

    (tmp_path / SPACE_FILE).write_text('{"scheduler": {"reduction_factor": 1.5}}')
    with pytest.raises(ConfigError, match="reduction_factor") as error:
        read_pinned(str(tmp_path))
    assert str(tmp_path) in str(error.value) and "--name" in str(error.value)
