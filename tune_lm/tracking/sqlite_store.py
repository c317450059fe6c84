"""A new MLflow SQLite store, created whole or not at all, from a template.

MLflow builds a new store's schema with about a hundred migrations on first contact
(2 s of CPU here). A search killed among them would leave a database no later run can
open ("table ... already exists"), so a store is built in a hidden file beside it
(``.NAME.creating-PID-N@HOST``) and linked into place when complete; a file left by a
killed creation is removed by the next one, and another search building the same store
at the same moment is left to finish (the first link wins).

The migrated schema is built once per MLflow version, as an empty template in the cache
(``~/.cache/tune_lm/mlflow/empty-store-VERSION.db``, the same way), without the Default
experiment: MLflow adds that, with its artifact folder under the working folder, when a
copy is first opened. A template that cannot be made or read is rebuilt, or skipped.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import socket
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from tune_lm.lm.corpus_files import cache_root
from tune_lm.tuning.experiment import sqlite_file

_BUILDS = itertools.count()
_SQLITE_COMPANIONS = ("-journal", "-wal", "-shm")  # files SQLite keeps beside a database


def create_sqlite_store(uri: str) -> None:
    """Create the SQLite store of ``uri`` if it names one that does not exist yet."""
    database = sqlite_file(uri)
    if database is None or database.exists():
        return
    template = store_template()
    if template is not None:
        try:
            _build_whole(database, lambda building: _open_store(building, template))
            return
        except Exception:  # noqa: BLE001 (a damaged template, whatever MLflow says): rebuilt
            template.unlink(missing_ok=True)
    _build_whole(database, _open_store)


def store_template() -> Path | None:
    """The cache's empty store for this MLflow version, made if missing (None: the
    cache cannot hold one)."""
    import mlflow

    template = cache_root() / "mlflow" / f"empty-store-{mlflow.__version__}.db"
    if template.is_file():
        return template
    try:
        template.parent.mkdir(parents=True, exist_ok=True)
        _build_whole(template, _empty_template)
    except (OSError, sqlite3.Error):
        return None
    return template


def _open_store(building: Path, template: Path | None = None) -> None:
    """MLflow's store at ``building``: the template's copy (MLflow adds the Default
    experiment), or the full build."""
    from mlflow.store.tracking import DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    if template is not None:
        shutil.copyfile(template, building)
    made = SqlAlchemyStore(f"sqlite:///{building}", DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH)
    made.engine.dispose()


def _empty_template(building: Path) -> None:
    _open_store(building)
    with contextlib.closing(sqlite3.connect(building)) as db, db:  # commits
        db.execute("DELETE FROM experiments WHERE experiment_id = 0")  # each copy's own


def _build_whole(target: Path, build: Callable[[Path], None]) -> None:
    """``build(hidden file)``, then link it into place as ``target`` (never replacing
    one another process made meanwhile); a build file left by a killed one is removed."""
    for stale in target.parent.glob(f".{target.name}.creating-*"):
        if _abandoned(stale):
            stale.unlink(missing_ok=True)
    # A name of its own for each build: MLflow keeps an engine per URI, which a failed
    # build leaves open on the file it read.
    building = target.with_name(f".{target.name}.creating-{os.getpid()}-{next(_BUILDS)}"
                                f"@{socket.gethostname()}")  # fmt: skip
    try:
        build(building)
        with contextlib.suppress(FileExistsError):  # another process made it meanwhile
            os.link(building, target)
    finally:
        for path in (building, *(Path(f"{building}{c}") for c in _SQLITE_COMPANIONS)):
            path.unlink(missing_ok=True)


def _abandoned(path: Path) -> bool:
    """Whether a hidden build file (``.NAME.creating-PID-N@HOST``, or SQLite's journal
    beside it) was left by a creation that is gone: its process is not alive here, or,
    built on another machine (shared storage), the file is ten minutes old."""
    pid, _, host = path.name.rsplit(".creating-", 1)[-1].partition("@")
    pid = pid.split("-")[0]
    for companion in _SQLITE_COMPANIONS:  # its rollback journal, left by a kill mid-write
        host = host.removesuffix(companion)
    if host and host != socket.gethostname():
        with contextlib.suppress(OSError):
            return time.time() - path.stat().st_mtime > 600
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (ValueError, OSError):  # not a pid, or another user's live process
        return False
    return False
