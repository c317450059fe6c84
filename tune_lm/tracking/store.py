"""Where MLflow logs: the tracking URI (default, credentials, checks before anything
starts) and how patiently a search waits for a tracking server. No Ray here: the report
and the inference commands use it too."""

from __future__ import annotations

import contextlib
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tune_lm.lm.atomic import probe_writable
from tune_lm.lm.errors import ConfigError
from tune_lm.tuning.experiment import (
    DATABASE_SCHEMES,
    plain_sqlite,
    without_password,
)


def default_tracking_uri() -> str:
    """--tracking-uri, else MLFLOW_TRACKING_URI, else MLflow's own default (./mlflow.db)."""
    given = os.environ.get("MLFLOW_TRACKING_URI")
    if given:
        return given
    import mlflow  # 3 s: only here and where MLflow is used, so refusals come first

    default = mlflow.get_tracking_uri()
    if default.startswith("sqlite:///") and default.endswith("/mlflow.db"):
        # ./mlflow.db as a URI, its path encoded (MLflow leaves a '%' in it as it is)
        return f"sqlite:///{urllib.parse.quote(str(Path.cwd() / 'mlflow.db'))}"
    return default


# Clean database URI -> the same URI with its password, for this process only: the password
# is never printed, written to an experiment's files, pickled with Tune's state or logged.
_WITH_PASSWORD: dict[str, str] = {}


def move_credentials(uri: str) -> str:
    """``uri`` without its password, which stays in this process only; the clean URI is
    what gets printed, pinned in ``search.json``, pickled with the experiment's state and
    logged. An MLflow server's ``user:password@`` moves to MLflow's own
    MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD variables; a database's password
    (``postgresql://user:password@host/db``) is put back only where MLflow connects
    (:func:`connect_uri`). A SQLite URI's path is written out (:func:`plain_sqlite`)."""
    uri = plain_sqlite(uri)
    parts = urllib.parse.urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    if parts.scheme in ("http", "https"):
        if parts.username:
            os.environ["MLFLOW_TRACKING_USERNAME"] = urllib.parse.unquote(parts.username)
        if parts.password:
            os.environ["MLFLOW_TRACKING_PASSWORD"] = urllib.parse.unquote(parts.password)
        return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
    clean = without_password(uri)
    if clean != uri:
        _WITH_PASSWORD[clean] = uri
    return clean


def connect_uri(uri: str) -> str:
    """The URI MLflow connects with: a clean database URI with the password this process
    was given for it (by --tracking-uri or MLFLOW_TRACKING_URI), else ``uri`` itself
    (PostgreSQL's own PGPASSWORD and ~/.pgpass still apply then)."""
    return _WITH_PASSWORD.get(uri, uri)


TRACKING_SCHEMES = ("http", "https", "sqlite", "postgresql", "mysql", "mssql", "databricks",
                    "databricks-uc", "uc")  # fmt: skip


def check_tracking_uri(uri: str) -> None:
    """A tracking URI MLflow 3 accepts, whose store can be written, before anything starts
    (MLflow itself would fail only at the first write, or retry an unwritable SQLite file
    for minutes)."""
    flag = "--tracking-uri (or MLFLOW_TRACKING_URI)"
    fix = "use sqlite:///PATH/mlflow.db or http(s)://HOST:PORT of an MLflow server"
    scheme = urllib.parse.urlsplit(uri).scheme.split("+")[0].lower()
    if scheme != "sqlite" and any(char.isspace() for char in uri):  # (a file's path may)
        raise ConfigError(f"{flag} {uri!r} contains white space; quote nothing into it: {fix}")
    if uri in ("databricks", "databricks-uc", "uc"):  # MLflow's bare Databricks URIs
        return
    if scheme == "" and Path(uri).suffix.lower() in (".db", ".sqlite", ".sqlite3"):
        raise ConfigError(f"{flag} {uri!r} is a path, not a URI: for a SQLite store give "
                          f"sqlite:///{uri} (three slashes, then the path)")  # fmt: skip
    if scheme in ("", "file"):
        if os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() == "true":
            return
        raise ConfigError(f"{flag} {uri!r} is a folder (MLflow's file store), which MLflow 3 "
                          f"no longer accepts: {fix}")  # fmt: skip
    if scheme not in TRACKING_SCHEMES:
        known = ", ".join(TRACKING_SCHEMES)
        raise ConfigError(f"{flag} {uri!r}: MLflow has no tracking store for scheme "
                          f"{scheme!r} (it knows {known}): {fix}")  # fmt: skip
    if scheme in ("http", "https") and not urllib.parse.urlsplit(uri).hostname:
        raise ConfigError(f"{flag} {uri!r} names no host: {fix}")
    if scheme == "sqlite":
        _check_sqlite_path(flag, uri, fix)
    if scheme in DATABASE_SCHEMES:
        _check_database_driver(flag, uri, scheme)


def _check_database_driver(flag: str, uri: str, scheme: str) -> None:
    """MLflow reaches a database server through SQLAlchemy and a driver package that
    tune_lm does not install: without it the first write failed with a traceback, after
    Ray had started. SQLAlchemy imports the driver when it builds the engine (no
    connection is made here)."""
    import sqlalchemy

    try:
        sqlalchemy.create_engine(uri).dispose()
    except ImportError as error:  # ModuleNotFoundError: psycopg2, MySQLdb, pyodbc ...
        raise ConfigError(f"{flag} {without_password(uri)}: the {scheme} driver is not "
                          f"installed ({error}). "
                          f"Install it in this environment (e.g. pip install "
                          f"{DRIVERS.get(scheme, 'its driver')}), or name the driver in the URI "
                          f"({scheme}+DRIVER://...)") from None
    except Exception as error:  # a malformed URL
        raise ConfigError(f"{flag}: not a {scheme} URL SQLAlchemy can read "
                          f"({_masked(str(error), uri)})") from None


DRIVERS = {"postgresql": "'psycopg[binary]'", "mysql": "mysqlclient (or pymysql, with "
           "mysql+pymysql://)", "mssql": "pyodbc"}  # fmt: skip


def _masked(text: str, uri: str) -> str:
    """``text`` without the password of ``uri`` (a driver's message may quote the URL)."""
    parts = urllib.parse.urlsplit(uri)
    secrets = [parts.password or ""] + [value for key, value in urllib.parse.parse_qsl(
        parts.query) if key == "password"]  # fmt: skip
    for secret in filter(None, secrets):
        text = text.replace(secret, "***").replace(urllib.parse.unquote(secret), "***")
    return text


def _check_sqlite_path(flag: str, uri: str, fix: str) -> None:
    raw = uri.split("://", 1)[1]
    if "%" in raw:  # written out, SQLAlchemy would still decode it: another file
        raise ConfigError(f"{flag} {uri!r}: the SQLite file's path holds a '%', which MLflow's "
                          f"store cannot be given unambiguously; run from a folder whose "
                          f"path has none, or {fix}")  # fmt: skip
    if not raw.startswith("/") or raw in ("/", "/:memory:"):
        raise ConfigError(f"{flag} {uri!r} names no database file: {fix}")
    database = Path(raw[1:])  # sqlite:///rel.db -> rel.db, sqlite:////abs.db -> /abs.db
    if database.is_dir():
        raise ConfigError(f"{flag} {uri!r}: {database} is a folder, not a database file: {fix}")
    try:
        probe_writable(database, create_missing=False)  # SQLite makes no folders
    except OSError as error:
        raise ConfigError(f"{flag} {uri!r}: the database cannot be written there "
                          f"({error.strerror or error}): {fix}") from None
    problem = _not_an_mlflow_database(database)
    if problem:
        raise ConfigError(f"{flag} {uri!r}: {database} {problem}, not MLflow's store (left "
                          f"as it is). Give a new file, or the store a search made: "
                          f"{fix}")  # fmt: skip


def _not_an_mlflow_database(database: Path) -> str | None:
    """Why an existing file is not MLflow's SQLite store (None: it is, or it is new or
    empty): another program's database, or no database at all."""
    if not database.is_file() or database.stat().st_size == 0:
        return None
    with open(database, "rb") as handle:
        if handle.read(16) != b"SQLite format 3\x00":
            return "is not a SQLite database"
    import sqlite3

    try:
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master "
                                                   "WHERE type = 'table'")}  # fmt: skip
    except sqlite3.Error as error:
        return f"cannot be read as a SQLite database ({error})"
    if tables and not {"experiments", "runs", "alembic_version"} <= tables:
        return f"is another program's database (tables {', '.join(sorted(tables)[:5])})"
    return None


def check_tracking_server(uri: str, timeout_s: float = 5.0) -> None:
    """An http(s) tracking server, or a database server, must answer before any trial
    starts (MLflow would retry a database that does not answer for minutes)."""
    if urllib.parse.urlsplit(uri).scheme.split("+")[0].lower() in DATABASE_SCHEMES:
        _check_database_answers(uri, timeout_s)
        return
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s) as answer:
            if answer.status == 200:
                return
            problem = f"HTTP {answer.status}"
    except (urllib.error.URLError, OSError) as error:
        problem = str(getattr(error, "reason", error))
    raise ConfigError(
        f"--tracking-uri {uri}: the MLflow tracking server does not answer ({problem}). "
        "Start it (e.g. mlflow server --host 127.0.0.1 --port 5000), fix the URI "
        "(--tracking-uri or MLFLOW_TRACKING_URI), or leave it out to log to ./mlflow.db"
    )


# How each SQLAlchemy driver is told to give up connecting (seconds).
_CONNECT_TIMEOUT = {"psycopg2": "connect_timeout", "psycopg": "connect_timeout",
                    "pymysql": "connect_timeout", "mysqldb": "connect_timeout",
                    "pg8000": "timeout", "pyodbc": "timeout"}  # fmt: skip


def _check_database_answers(uri: str, timeout_s: float) -> None:
    """Connect once to the database of ``uri`` (a clean URI: the password given to this
    process is put back), and name what failed without the password."""
    import sqlalchemy

    full = connect_uri(uri)
    engine = sqlalchemy.create_engine(full, poolclass=sqlalchemy.pool.NullPool)
    option = _CONNECT_TIMEOUT.get(engine.dialect.driver)
    if option:
        engine.dispose()
        engine = sqlalchemy.create_engine(full, poolclass=sqlalchemy.pool.NullPool,
                                          connect_args={option: max(1, int(timeout_s))})
    try:
        with engine.connect():
            return
    except Exception as error:  # refused, unknown host, authentication, no such database
        cause = getattr(error, "orig", None) or error
        lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
        problem = _masked(" ".join(lines[:2]) or type(cause).__name__, full)
    finally:
        engine.dispose()
    given = urllib.parse.urlsplit(full).password or "password=" in full
    again = ("A password is never stored with an experiment or printed: give it in the URI "
             "(postgresql://USER:PASSWORD@HOST/DB) by --tracking-uri or MLFLOW_TRACKING_URI, "
             "again on --resume and --extend (the URI the search started with, plus the "
             "password), or by PostgreSQL's PGPASSWORD")  # fmt: skip
    if re.search("password|authenticat", problem, re.IGNORECASE):
        raise ConfigError(f"--tracking-uri {uri}: the database refused the login "
                          f"({problem}). Check the user and password in the URI"
                          if given else f"--tracking-uri {uri}: the database asks for a "
                          f"password ({problem}). {again}")  # fmt: skip
    raise ConfigError(f"--tracking-uri {uri}: the database does not answer ({problem}). "
                      f"Start it, or fix the URI (--tracking-uri or MLFLOW_TRACKING_URI), "
                      f"or leave it out to log to ./mlflow.db."
                      + ("" if given else f" {again}."))  # fmt: skip


def check_store_exists(uri: str, flag: str) -> None:
    """For commands that only read (report --mlflow, generate/evaluate --model): the
    tracking store must exist already. Asking MLflow about a SQLite file that does not
    exist creates an empty one (by default ./mlflow.db in the working folder)."""
    fix = ("Give the store the search logged to: --tracking-uri sqlite:///PATH/mlflow.db "
           "(a search logs to mlflow.db in the folder it ran from unless told otherwise) "
           "or http://HOST:PORT of an MLflow server, or set MLFLOW_TRACKING_URI")  # fmt: skip
    scheme = urllib.parse.urlsplit(uri).scheme.split("+")[0].lower()
    if scheme == "sqlite":
        raw = uri.split("://", 1)[1]
        database = Path(raw[1:]) if raw.startswith("/") and raw not in ("/", "/:memory:") else None
        if database is None or not database.is_file():
            where = f"{database} does not exist" if database else "it names no database file"
            raise ConfigError(f"{flag}: there is no MLflow store at {uri} ({where}; nothing "
                              f"was created). {fix}")  # fmt: skip
    elif scheme in ("", "file"):
        folder = Path(urllib.parse.urlsplit(uri).path if scheme else uri)
        if not folder.is_dir():
            raise ConfigError(f"{flag}: there is no MLflow store at {uri} ({folder} is not "
                              f"a folder). {fix}")  # fmt: skip
    elif scheme in ("http", "https", *DATABASE_SCHEMES):
        check_tracking_server(uri)


def limit_http_retries() -> None:
    """MLflow retries an unreachable server for minutes by default; a search should not
    stall on its logging, so calls give up after a few seconds (what failed is reported)."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
