"""A search that logs to a database server (PostgreSQL, the kind of store a team shares)
whose URI carries a password: the password is used, never stored or printed, and is
asked for again when the search goes on.

The server is a real PostgreSQL (the ``pgserver`` wheel, started in a temporary folder)
with password authentication switched on, reached through SQLAlchemy's default driver.
"""

from __future__ import annotations

import shutil
import tempfile
import urllib.parse
from pathlib import Path

import pytest
from cli_run import run_cli

from tune_lm.tracking.store import connect_uri, move_credentials
from tune_lm.tuning.experiment import clean_tracking_uri, without_password

PASSWORD = "s3cr3t!Pw"
SPACE = """
name: shared
data: synthetic
seed: 3
searcher: {type: optuna, sampler: tpe, n_startup_trials: 2}
scheduler: {type: fifo}
budget: {num_samples: 2, max_concurrent: 2}
fixed: {epochs: 2, nlayers: 1, emsize: 16, nhid: 16, batch_size: 8, bptt: 10,
        max_tokens_per_epoch: 1600}
parameters:
  lr: {loguniform: [1.0, 20.0]}
"""


@pytest.mark.parametrize(("given", "clean"), [
    ("postgresql://me:p%40ss@db.lab:5432/mlflow", "postgresql://me@db.lab:5432/mlflow"),
    ("mysql+pymysql://root:pw@localhost/mlflow?charset=utf8",
     "mysql+pymysql://root@localhost/mlflow?charset=utf8"),
    ("postgresql://:pw@/mlflow?host=/run/pg", "postgresql:///mlflow?host=/run/pg"),
    ("postgresql://me@db/mlflow?password=x%2Fy&sslmode=require",
     "postgresql://me@db/mlflow?sslmode=require"),
    ("postgresql://me@db/mlflow", "postgresql://me@db/mlflow"),
    ("mssql+pyodbc://sa:pw@dsn", "mssql+pyodbc://sa@dsn"),
])  # fmt: skip
def test_a_database_password_stays_in_the_process(given, clean):
    assert without_password(given) == clean
    assert clean_tracking_uri(given) == clean  # what search.json pins
    assert move_credentials(given) == clean  # what is printed, pickled and logged
    assert connect_uri(clean) == given  # what MLflow connects with, in this process


def test_other_uris_keep_what_they_hold():
    assert without_password("sqlite:///a:b@c.db") == "sqlite:///a:b@c.db"
    assert connect_uri("postgresql://nobody@elsewhere/db") == "postgresql://nobody@elsewhere/db"


@pytest.fixture(scope="module")
def database():
    """A PostgreSQL server that asks for a password: ``(uri with it, uri without)``."""
    pgserver = pytest.importorskip("pgserver")
    folder = Path(tempfile.mkdtemp(prefix="pg"))  # short: the socket's path has a limit
    server = pgserver.get_server(folder, cleanup_mode="stop")
    try:
        server.psql(f"ALTER USER postgres PASSWORD '{PASSWORD}';")
        server.psql("CREATE DATABASE mlflow;")
        hba = folder / "pg_hba.conf"
        hba.write_text("local all all scram-sha-256\nhost all all 127.0.0.1/32 scram-sha-256\n")
        server.psql("SELECT pg_reload_conf();")  # still trusted: the old rules hold till now
        quoted = urllib.parse.quote(PASSWORD, safe="")
        yield (f"postgresql://postgres:{quoted}@/mlflow?host={folder}",
               f"postgresql://postgres@/mlflow?host={folder}")  # fmt: skip
    finally:
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


def files_holding(folder: Path, secret: str) -> list[str]:
    return [str(p) for p in folder.rglob("*") if p.is_file()
            and (secret.encode() in p.read_bytes()
                 or urllib.parse.quote(secret, safe="").encode() in p.read_bytes())]  # fmt: skip


@pytest.mark.slow
def test_a_password_protected_database_store_is_used_never_stored_and_asked_for_again(
    tmp_path, database
):  # fmt: skip
    import sqlalchemy

    with_password, without = database
    (tmp_path / "space.yaml").write_text(SPACE)
    done = run_cli("search", "--space", "space.yaml", "--tracking-uri", with_password,
                   cwd=tmp_path, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"MLflow: {without}" in done.stdout

    # Going on without the password: refused before anything starts, saying how to give it.
    refused = run_cli("search", "--extend", "1", "--name", "shared", cwd=tmp_path, timeout=120)
    assert refused.returncode == 2, refused.stdout[-2000:] + refused.stderr[-2000:]
    message = " ".join(refused.stderr.split())
    assert "never stored" in message and "PGPASSWORD" in message, message
    assert without in message and "Traceback" not in refused.stderr, message

    # Given again (here as PostgreSQL's own variable), the search goes on.
    extended = run_cli("search", "--extend", "1", "--name", "shared", cwd=tmp_path,
                       env={"PGPASSWORD": PASSWORD}, timeout=300)  # fmt: skip
    assert extended.returncode == 0, extended.stdout[-3000:] + extended.stderr[-3000:]

    outputs = done.stdout + done.stderr + refused.stderr + extended.stdout + extended.stderr
    assert PASSWORD not in outputs and urllib.parse.quote(PASSWORD, safe="") not in outputs
    # Nowhere on disk: not in search.json, the log, Tune's pickled state, the checkpoints.
    assert not files_holding(tmp_path, PASSWORD)

    engine = sqlalchemy.create_engine(with_password)
    try:
        with engine.connect() as db:
            statuses = db.execute(sqlalchemy.text(
                "SELECT r.status, t.value FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
                "WHERE t.key = 'tune_lm.kind'")).all()  # fmt: skip
            leaked = db.execute(sqlalchemy.text(
                "SELECT count(*) FROM params WHERE value LIKE :s UNION ALL "
                "SELECT count(*) FROM tags WHERE value LIKE :s"), {"s": "%s3cr3t%"}).all()
    finally:
        engine.dispose()
    assert sorted(statuses) == [("FINISHED", "search")] + [("FINISHED", "trial")] * 3, statuses
    assert [count for (count,) in leaked] == [0, 0]
