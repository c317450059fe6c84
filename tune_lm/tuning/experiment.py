"""What an experiment folder holds besides Ray's own state: the space it started with
(``space.json``) and the settings a resume must keep (``search.json``: the corpus and its
fingerprint, the tracking URI, which checkpoints are logged, the progress interval).

A resumed search reads both before it loads anything, so it trains on the corpus it
started with and reports to the same MLflow store; a flag given anew on ``--resume``
that disagrees is refused, never half applied. Both files are written atomically, in a
local folder or (through pyarrow's filesystems, as Ray writes) remote storage.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import urllib.parse
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from tune_lm.lm.atomic import atomic_file
from tune_lm.lm.config import describe_validation_error
from tune_lm.lm.errors import ConfigError
from tune_lm.tuning.layout import EXTENSIONS_FILE, FINISHED_FILE, SETTINGS_FILE, SPACE_FILE
from tune_lm.tuning.space import SearchSpace

SETTINGS_FORMAT = "tune_lm.search/1"


@dataclass(frozen=True)
class SearchSettings:
    """What a ``--resume`` must keep, as the search started with it."""

    data: str  # the corpus as named (a folder is made absolute)
    corpus_name: str
    fingerprint: str  # sha256 of the corpus contents
    ntokens: int
    tracking_uri: str  # without credentials
    log_checkpoints: str
    progress_every: float
    experiment: str = ""  # where it was made ("": pinned before this was recorded)
    space_sha256: str = ""  # of space.json as pinned ("": pinned before this was recorded)


@dataclass(frozen=True)
class Pinned:
    space: SearchSpace
    settings: SearchSettings | None  # None: an experiment from before search.json existed
    edited: bool = False  # space.json differs from what was pinned


def read_pinned(path: str) -> Pinned | None:
    """The experiment's pinned space and settings, or None when it has none yet (a search
    killed before it wrote them)."""
    space_text = _read(path, SPACE_FILE)
    if space_text is None:
        return None
    try:
        space = SearchSpace.model_validate_json(space_text, context={"saved": True})
        settings_text = _read(path, SETTINGS_FILE)
        settings = None
        if settings_text is not None:
            raw = json.loads(settings_text)
            if raw.pop("format", None) != SETTINGS_FORMAT:
                raise ValueError(f"not a {SETTINGS_FORMAT} file")
            settings = SearchSettings(**raw)
    except (ValueError, TypeError) as error:
        detail = (describe_validation_error(error) if isinstance(error, ValidationError)
                  else str(error).splitlines()[0])  # fmt: skip
        raise ConfigError(
            f"the experiment's {SPACE_FILE}/{SETTINGS_FILE} in {path} cannot be "
            f"used ({detail}): it was damaged, or saved by a version of tune_lm that checked "
            "less. Start the search again under another --name"
        ) from None
    pinned_as = settings.space_sha256 if settings else ""
    return Pinned(space, settings, edited=bool(pinned_as) and _sha256(space_text) != pinned_as)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def write_pinned(path: str, space: SearchSpace, settings: SearchSettings) -> None:
    """Pin a new experiment's space and settings (each file written whole or not at all)."""
    text = space.model_dump_json(indent=2) + "\n"
    _write(path, SPACE_FILE, text)
    payload = {"format": SETTINGS_FORMAT, **asdict(settings), "space_sha256": _sha256(text)}
    _write(path, SETTINGS_FILE, json.dumps(payload, indent=2) + "\n")


def mark_finished(path: str, outcome: dict[str, Any]) -> None:
    """Note that the search at ``path`` ended for good (``outcome``: what it found), so
    that a later ``--resume`` says so instead of running anything again."""
    _write(path, FINISHED_FILE, json.dumps(outcome, indent=2, default=str) + "\n")


def read_finished(path: str) -> dict[str, Any] | None:
    """What :func:`mark_finished` noted, or None for a search that has not ended."""
    text = _read(path, FINISHED_FILE)
    if text is None:
        return None
    try:
        found = json.loads(text)
    except ValueError:  # written whole or not at all; a damaged file is not a verdict
        return None
    return found if isinstance(found, dict) else None


def clear_finished(path: str) -> None:
    """The search at ``path`` is going on again (``--extend``); a local folder only."""
    (Path(path) / FINISHED_FILE).unlink(missing_ok=True)


def read_extensions(path: str) -> list[dict[str, Any]]:
    """The ``--extend`` calls made on the experiment, oldest first: each ``{"added": N,
    "total": trials in all after it, "at": when}``."""
    text = _read(path, EXTENSIONS_FILE)
    try:
        found = json.loads(text) if text is not None else []
    except ValueError:  # written whole or not at all
        return []
    return [e for e in found if isinstance(e, dict)] if isinstance(found, list) else []


def add_extension(path: str, entry: dict[str, Any]) -> None:
    _write(path, EXTENSIONS_FILE, json.dumps([*read_extensions(path), entry], indent=2) + "\n")


def _read(path: str, name: str) -> str | None:
    if "://" not in path:
        file = Path(path) / name
        return file.read_text(encoding="utf-8") if file.is_file() else None
    import pyarrow.fs

    filesystem, root = pyarrow.fs.FileSystem.from_uri(path)
    target = f"{root.rstrip('/')}/{name}"
    if filesystem.get_file_info(target).type != pyarrow.fs.FileType.File:
        return None
    with filesystem.open_input_stream(target) as stream:
        return stream.read().decode("utf-8")


def _write(path: str, name: str, text: str) -> None:
    if "://" in path:  # an object store writes an object whole
        import pyarrow.fs

        filesystem, root = pyarrow.fs.FileSystem.from_uri(path)
        filesystem.create_dir(root, recursive=True)
        with filesystem.open_output_stream(f"{root.rstrip('/')}/{name}") as stream:
            stream.write(text.encode("utf-8"))
        return
    with atomic_file(Path(path) / name, "w") as out:
        out.write(text)


def clean_tracking_uri(uri: str) -> str:
    """The URI without a server's ``user:password@`` or a database's password (never
    stored), and with a relative SQLite path made absolute, so a resume from another
    folder reaches the same store."""
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme in ("http", "https") and "@" in parts.netloc:
        uri = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
    uri = without_password(uri)
    if uri.startswith("sqlite:///") and not uri.startswith(("sqlite:////", "sqlite:///:memory:")):
        uri = "sqlite:///" + str(Path(uri.removeprefix("sqlite:///")).resolve())
    return uri


def plain_sqlite(uri: str) -> str:
    """A ``sqlite:///`` URI with its path written out (``%20`` -> a space, ``%C3%BC`` ->
    ``ü``); any other URI unchanged. SQLAlchemy decodes the path as it opens the file,
    but MLflow makes the file's folder from the text as written, and MLflow's default in
    a folder named ``my runs`` is ``sqlite:///.../my%20runs/mlflow.db``: given as it
    was, a stray folder ``my%20runs`` appeared beside the real one. Applied once, where a
    URI comes in (``store.move_credentials``): the URIs kept from then on are written out."""
    if not uri.startswith("sqlite:///") or uri.startswith("sqlite:///:memory:"):
        return uri
    return "sqlite:///" + urllib.parse.unquote(uri.removeprefix("sqlite:///"))


DATABASE_SCHEMES = ("postgresql", "mysql", "mssql")  # MLflow's SQLAlchemy stores


def without_password(uri: str) -> str:
    """A database URI without the password of its ``user:password@`` (the user stays) or
    its ``password=`` query parameter; any other URI unchanged."""
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme.split("+")[0].lower() not in DATABASE_SCHEMES:
        return uri
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    if any(key == "password" for key, _ in query):
        kept = urllib.parse.urlencode([(k, v) for k, v in query if k != "password"], safe="/")
        uri = uri.replace(f"?{parts.query}", f"?{kept}" if kept else "", 1)
        parts = urllib.parse.urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    user_part, host = parts.netloc.rsplit("@", 1)
    user = user_part.split(":", 1)[0]
    # Not urlunsplit: it drops the // of an empty host (postgresql:///db?host=/socket).
    scheme, rest = uri.split("://", 1)
    return f"{scheme}://{f'{user}@' if user else ''}{host}{rest[len(parts.netloc):]}"


def sqlite_file(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` tracking URI (made absolute by
    :func:`clean_tracking_uri`), else None."""
    if not uri.startswith("sqlite:///") or uri.startswith("sqlite:///:memory:"):
        return None
    return Path(uri.removeprefix("sqlite:///"))


def resume_conflicts(given: dict[str, tuple[Any, Any]]) -> list[str]:
    """Of ``{flag: (value given on --resume or None, value the experiment started with)}``,
    the flags given with another value, each as ``--flag V (started with W)``."""
    return [f"{flag} {value} (the experiment started with {was})"
            for flag, (value, was) in given.items()
            if value is not None and value != was]  # fmt: skip


def remove_lost_trial_folders(path: str, kept: Iterable[str]) -> list[str]:
    """Remove the trial folders of a finished local experiment that none of its trials
    owns, and return their names. A trial that started after Tune's last snapshot, before
    a driver kill, is created again by ``--resume`` in a new folder; the old one holds
    only what that lost attempt wrote."""
    if "://" in path or not Path(path).is_dir():
        return []
    kept, lost = set(kept), []
    for child in sorted(Path(path).iterdir()):
        trial_like = (child / "params.json").is_file() or any(child.glob("checkpoint_*"))
        if child.is_dir() and child.name not in kept and trial_like:
            shutil.rmtree(child, ignore_errors=True)
            lost.append(child.name)
    return lost


REMOTE_MARK = ".tune_lm_remote.json"  # in ./NAME: which remote experiment it is the copy of


def local_copy_folder(path: str) -> Path:
    """Where an experiment in remote storage (``s3://.../NAME``) keeps its summary, report
    and log on this machine: ``./NAME``."""
    return Path.cwd() / path.rstrip("/").rsplit("/", 1)[-1]


def check_local_copy(path: str) -> None:
    """``./NAME`` of a remote experiment is new, empty, or this experiment's own copy: a
    search writes its summary, report and log there, over files of the same names."""
    folder = local_copy_folder(path)
    if not folder.exists():
        return
    if folder.is_dir() and not any(folder.iterdir()):
        return
    mark = folder / REMOTE_MARK
    with contextlib.suppress(OSError, ValueError, AttributeError):
        if json.loads(mark.read_text(encoding="utf-8")).get("experiment") == path:
            return
    what = "a file" if not folder.is_dir() else "a folder of other files"
    raise ConfigError(f"the experiment {path} is in remote storage, so its summary, report and "
                      f"log go to {folder} on this machine, which is {what} (they would be "
                      f"overwritten). Run from another folder, or give another --name; if it "
                      f"is this experiment's own copy made by an earlier tune_lm (no "
                      f"{REMOTE_MARK} in it), move it away first")


def mark_local_copy(path: str) -> None:
    """Make ``./NAME`` and record which remote experiment it belongs to."""
    folder = local_copy_folder(path)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_file(folder / REMOTE_MARK, "w") as out:
        out.write(json.dumps({"experiment": path}) + "\n")
