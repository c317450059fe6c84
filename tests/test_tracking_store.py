"""The MLflow store under faults: a new SQLite store appears whole or not at all, however
it is killed; credentials leave the tracking URI; runs of trials lost with a killed driver
are deleted."""

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import stop_process  # noqa: E402  (tests/ is on sys.path)
from mlflow.tracking import MlflowClient


def test_credentials_leave_the_tracking_uri(monkeypatch):
    from tune_lm.tracking.store import move_credentials

    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    assert move_credentials("http://me:p%40ss@127.0.0.1:5000/x") == "http://127.0.0.1:5000/x"
    assert os.environ["MLFLOW_TRACKING_USERNAME"] == "me"
    assert os.environ["MLFLOW_TRACKING_PASSWORD"] == "p@ss"
    assert move_credentials("sqlite:///mlflow.db") == "sqlite:///mlflow.db"
    assert move_credentials("https://127.0.0.1:5000") == "https://127.0.0.1:5000"


def test_runs_of_trials_lost_with_a_killed_driver_are_deleted(tmp_path):
    """A trial started after Ray's last snapshot has an MLflow run but no place in the
    resumed experiment: that run goes, the others stay."""
    from tune_lm.tracking.tags import PARENT_TAG, TAG_KIND, TAG_TRIAL
    from tune_lm.tracking.trial_runs import delete_lost_trial_runs

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("lost")
    parent = client.create_run(experiment, tags={TAG_KIND: "search"}).info.run_id
    for trial in ("aaaa1111", "bbbb2222", "cccc3333"):
        client.create_run(experiment, tags={TAG_KIND: "trial", TAG_TRIAL: trial,
                                            PARENT_TAG: parent})  # fmt: skip
    other_search = client.create_run(experiment, tags={TAG_KIND: "search"}).info.run_id
    client.create_run(experiment, tags={TAG_KIND: "trial", TAG_TRIAL: "dddd4444",
                                        PARENT_TAG: other_search})  # fmt: skip
    known = ["train_trial_aaaa1111_1_lr=2.0_2026-11-25", "train_trial_cccc3333_3_lr=1.0_x"]
    assert delete_lost_trial_runs(client, experiment, parent, known) == ["bbbb2222"]
    left = client.search_runs([experiment], f"tags.`{TAG_KIND}` = 'trial'")
    assert sorted(run.data.tags[TAG_TRIAL] for run in left) == ["aaaa1111", "cccc3333",
                                                                "dddd4444"]  # fmt: skip


CREATE_STORE = """
import sys
from tune_lm.tracking.sqlite_store import create_sqlite_store
print("imported", flush=True)
create_sqlite_store(sys.argv[1])
"""


def schema_version(database: Path) -> str | None:
    """The alembic revision a SQLite MLflow store has reached (None: none yet)."""
    with contextlib.closing(sqlite3.connect(database, timeout=30)) as db:
        try:
            return db.execute("SELECT version_num FROM alembic_version").fetchone()[0]
        except sqlite3.OperationalError:  # no such table: the first migration is running
            return None


def start_creating(uri: str, cache: Path | None = None) -> subprocess.Popen:
    """A process creating the store of ``uri``; ``cache``: its (empty) cache, so that it
    builds the store template too: seconds of migrations to kill it among."""
    env = {**os.environ, **({"TUNE_LM_CACHE_DIR": str(cache)} if cache else {})}
    creator = subprocess.Popen([sys.executable, "-c", CREATE_STORE, uri],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               start_new_session=True, env=env)  # fmt: skip
    assert creator.stdout.readline().strip() == b"imported"
    return creator


@pytest.mark.slow
def test_a_new_store_appears_whole_and_a_kill_while_it_is_built_leaves_none(tmp_path):
    """MLflow builds a new SQLite store with dozens of migrations (seconds here) and a
    kill between a migration's DDL and its version stamp leaves a database every later
    open fails on ("table secrets already exists"). So the store's path must never hold
    a part-built schema: watched while it is built, it appears at the final revision; a
    kill while it is built leaves nothing there, and the next start builds it whole."""
    start_creating(f"sqlite:///{tmp_path / 'reference.db'}").wait(timeout=120)
    head = schema_version(tmp_path / "reference.db")
    assert head is not None

    watched = tmp_path / "watched" / "mlflow.db"
    watched.parent.mkdir()
    creator = start_creating(f"sqlite:///{watched}", tmp_path / "watched_cache")
    while creator.poll() is None and not watched.exists():
        time.sleep(0.01)
    assert watched.exists(), "the creation ended without a store"
    assert schema_version(watched) == head  # what appeared was already complete
    creator.wait(timeout=120)

    killed = tmp_path / "killed" / "mlflow.db"
    killed.parent.mkdir()
    uri, cache = f"sqlite:///{killed}", tmp_path / "killed_cache"
    creator = start_creating(uri, cache)
    time.sleep(1.0)  # the imports are done: this is among the (template's) migrations
    assert creator.poll() is None and not killed.exists()
    stop_process(creator, signal.SIGKILL)
    assert not killed.exists()
    assert start_creating(uri, cache).wait(timeout=120) == 0  # the next (and its clean-up)
    assert schema_version(killed) == head
    assert MlflowClient(uri).search_experiments()[0].name == "Default"
    assert [p.name for p in killed.parent.iterdir()] == ["mlflow.db"]  # nothing half-made
    templates = list((cache / "mlflow").iterdir())  # nor in the cache
    assert len(templates) == 1 and schema_version(templates[0]) == head, templates


def test_a_store_copied_from_the_template_is_a_new_store_and_a_bad_template_is_replaced(
        tmp_path, monkeypatch):  # fmt: skip
    from tune_lm.tracking.sqlite_store import create_sqlite_store, store_template

    monkeypatch.setenv("TUNE_LM_CACHE_DIR", str(tmp_path / "cache"))
    template = store_template()  # migrated, without the Default experiment
    head = schema_version(template)
    with contextlib.closing(sqlite3.connect(template)) as db:
        assert head and db.execute("SELECT COUNT(*) FROM experiments").fetchone() == (0,)
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    for name in ("a", "b", "c"):
        if name == "b":
            template.write_bytes(b"not a database")  # damaged: the store is built in full
        create_sqlite_store(f"sqlite:///{tmp_path / name}.db")
        assert schema_version(tmp_path / f"{name}.db") == head
        client = MlflowClient(f"sqlite:///{tmp_path / name}.db")
        default = client.get_experiment("0")  # MLflow's own, where this process works
        assert default.name == "Default", name
        assert default.artifact_location == str(tmp_path / "work" / "mlruns" / "0"), name
        assert client.create_experiment("x") == "1"
    assert schema_version(template) == head  # made again by the third store


@pytest.mark.slow
def test_two_searches_creating_one_store_at_once_both_get_it(tmp_path):
    """Two searches started together on a store not made yet each build it in their own
    hidden file; neither removes the other's while it is being built (one did, and the
    other died with 'disk I/O error'), and the first link wins."""
    database = tmp_path / "shared" / "mlflow.db"
    database.parent.mkdir()
    uri = f"sqlite:///{database}"
    creators = [subprocess.Popen([sys.executable, "-c", CREATE_STORE, uri],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                for _ in range(2)]  # fmt: skip
    for creator in creators:  # started together: both build it at the same time
        assert creator.stdout.readline().strip() == b"imported"
    ended = [creator.wait(timeout=180) for creator in creators]
    assert ended == [0, 0], [creator.stderr.read()[-2000:] for creator in creators]
    assert schema_version(database) is not None
    assert MlflowClient(uri).search_experiments()[0].name == "Default"
    assert [p.name for p in database.parent.iterdir()] == ["mlflow.db"]


def test_of_two_searches_of_one_name_started_together_the_later_is_refused(tmp_path):
    """check_name_free passes both when two searches of one name from two folders start
    on one store within the same seconds: once its run exists, each looks again, and
    the later run is deleted and refused, naming the other."""
    from tune_lm.lm.errors import RefusedAtStart
    from tune_lm.tracking.parent_run import _check_first
    from tune_lm.tracking.tags import TAG_KIND, TAG_PATH

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("same")
    runs = {path: client.create_run(experiment, start_time=1_800_000_000_000 + offset,
                                    tags={TAG_KIND: "search", TAG_PATH: path})
            for offset, path in enumerate(("/a/tune_lm_runs/same", "/b/tune_lm_runs/same"))}
    _check_first(client, experiment, runs["/a/tune_lm_runs/same"], "same", "/a/tune_lm_runs/same")
    with pytest.raises(RefusedAtStart, match="taken, at the same moment, by the search at /a/"):
        _check_first(client, experiment, runs["/b/tune_lm_runs/same"], "same",
                     "/b/tune_lm_runs/same")  # fmt: skip
    left = client.search_runs([experiment])
    assert [r.data.tags[TAG_PATH] for r in left] == ["/a/tune_lm_runs/same"]
