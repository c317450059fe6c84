"""Where a report's inputs come from when the experiment is not a local folder.

Both sources are copied into a local folder laid out like an experiment folder
(``summary.json``, the Optuna journal, ``<trial>/result.json``), so the report has one
reader:

- a storage URI (``s3://bucket/runs/NAME``, ``gs://...``, ``file://...``): the small
  result files are copied with pyarrow's filesystems (the ones Ray Tune itself writes
  with), checkpoints are skipped;
- a finished MLflow experiment: the search's parent run gives ``summary.json`` and the
  study (artifacts), each trial's child run its metric history.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from tune_lm.lm import metrics as M
from tune_lm.lm.atomic import write_atomic
from tune_lm.lm.errors import TuneLMError
from tune_lm.tuning.layout import STUDY_FILE, SUMMARY_JSON

log = logging.getLogger(__name__)

SMALL_FILES = (SUMMARY_JSON, STUDY_FILE, "space.json", "result.json")


# check(summary.json's bytes, where they came from): raises before anything is written.
SummaryCheck = Callable[[bytes, str], None]


def fetch_uri(uri: str, dest: Path, check: SummaryCheck) -> Path:
    """Copy an experiment's result files (no checkpoints) from ``uri`` into ``dest``, once
    ``check`` has accepted its summary."""
    import pyarrow.fs

    try:
        filesystem, root = pyarrow.fs.FileSystem.from_uri(uri)
        infos = filesystem.get_file_info(pyarrow.fs.FileSelector(root, recursive=True))
    except (OSError, ValueError) as error:
        raise TuneLMError(
            f"{uri}: cannot list the experiment there ({error}). Check the URI and the "
            "credentials (for s3:// the usual AWS_* variables or ~/.aws), or copy the "
            "folder locally and give its path"
        ) from None
    wanted = [i for i in infos if i.type == pyarrow.fs.FileType.File
              and Path(i.path).name in SMALL_FILES and "checkpoint_" not in i.path]  # fmt: skip
    files = {Path(i.path).relative_to(root.rstrip("/")): i.path for i in wanted}
    if Path(SUMMARY_JSON) not in files:
        raise TuneLMError(f"{uri}: no {SUMMARY_JSON} there; give the folder of a search "
                          "whose run has ended (STORAGE/NAME)")  # fmt: skip
    contents = {}
    for relative, path in files.items():
        with filesystem.open_input_stream(path) as source:
            contents[relative] = source.read()
    check(contents[Path(SUMMARY_JSON)], f"{uri.rstrip('/')}/{SUMMARY_JSON}")
    for relative, data in contents.items():
        write_atomic(dest / relative, data)
    return dest


def fetch_trial_results(uri: str, dest: Path) -> int:
    """Copy each trial's ``result.json`` of the experiment at ``uri`` (remote storage) into
    ``dest``, where the search writes its summary: its own report then has the learning
    curves too. Returns how many were copied."""
    import pyarrow.fs

    filesystem, root = pyarrow.fs.FileSystem.from_uri(uri)
    infos = filesystem.get_file_info(pyarrow.fs.FileSelector(root, recursive=True))
    copied = 0
    for info in infos:
        relative = Path(info.path).relative_to(root.rstrip("/"))
        if info.type != pyarrow.fs.FileType.File or relative.name != "result.json":
            continue
        if len(relative.parts) != 2:  # TRIAL/result.json only, never inside checkpoints
            continue
        with filesystem.open_input_stream(info.path) as source:
            write_atomic(dest / relative, source.read())
        copied += 1
    return copied


def fetch_mlflow(experiment: str, tracking_uri: str, dest: Path, check: SummaryCheck) -> Path:
    """Rebuild an experiment folder from the MLflow runs of a finished search, once
    ``check`` has accepted its summary. Reads only: a store that does not exist is refused,
    never created."""
    from mlflow.tracking import MlflowClient

    from tune_lm.tracking.store import check_store_exists, connect_uri
    from tune_lm.tracking.tags import PARENT_TAG, TAG_KIND, TAG_TRIAL

    check_store_exists(tracking_uri, f"--mlflow {experiment}")
    client = MlflowClient(connect_uri(tracking_uri))
    found = client.get_experiment_by_name(experiment)
    if found is None:
        names = [e.name for e in client.search_experiments(max_results=50)]
        raise TuneLMError(f"MLflow at {tracking_uri} has no experiment {experiment!r}; "
                          f"it has: {', '.join(names) or 'none'}")  # fmt: skip
    parents = client.search_runs(
        [found.experiment_id], filter_string=f"tags.`{TAG_KIND}` = 'search'",
        order_by=["attributes.start_time DESC"],
    )  # fmt: skip
    if not parents:
        raise TuneLMError(
            f"MLflow experiment {experiment!r} at {tracking_uri} holds no tune_lm search (no "
            f"run tagged {TAG_KIND}=search), so there is nothing to report; "
            f"{_searched_experiments(client)}"
        )
    # MLflow's download bar would stand between the command and its answer (or its error)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for parent in parents:
        with tempfile.TemporaryDirectory() as scratch:
            try:
                summary = client.download_artifacts(parent.info.run_id, f"summary/{SUMMARY_JSON}",
                                                    scratch)  # fmt: skip
            except Exception:  # this search never finished; try an older one
                continue
            summary_bytes = Path(summary).read_bytes()
            check(summary_bytes, f"summary/{SUMMARY_JSON} of MLflow run {parent.info.run_id}")
            write_atomic(dest / SUMMARY_JSON, summary_bytes)
            try:
                study = client.download_artifacts(parent.info.run_id, f"summary/{STUDY_FILE}",
                                                  scratch)  # fmt: skip
                write_atomic(dest / STUDY_FILE, Path(study).read_bytes())
            except Exception:  # older searches did not log the study: no importances
                log.info("no Optuna study in run %s", parent.info.run_id)
        break
    else:
        raise TuneLMError(
            f"MLflow experiment {experiment!r} has no finished search (a parent run with "
            f"summary/{SUMMARY_JSON}); wait for the search to end, or --resume it"
        )
    children = client.search_runs(
        [found.experiment_id],
        filter_string=f"tags.`{TAG_KIND}` = 'trial' and tags.`{PARENT_TAG}` = "
        f"'{parent.info.run_id}'",
    )  # fmt: skip
    for child in children:
        trial_id = child.data.tags[TAG_TRIAL]
        steps: dict[int, dict[str, float]] = {}
        for name in (M.EPOCH, M.VAL_PPL, M.VAL_LOSS, M.TRAIN_LOSS, M.EPOCH_TIME_S,
                     M.TOKENS_PER_S):  # fmt: skip
            for point in client.get_metric_history(child.info.run_id, name):
                entry = steps.setdefault(point.step, {"trial_id": trial_id, M.STEP: point.step})
                entry[name] = point.value
                entry["timestamp"] = max(entry.get("timestamp", 0), point.timestamp / 1000)
        lines = [json.dumps(steps[step]) for step in sorted(steps)]
        write_atomic(dest / trial_id / "result.json", ("\n".join(lines) + "\n").encode())
    return dest


def _searched_experiments(client) -> str:
    """The experiments of this store that hold a tune_lm search, for an error message."""
    from tune_lm.tracking.tags import TAG_KIND

    experiments = {e.experiment_id: e.name for e in client.search_experiments(max_results=200)}
    runs = client.search_runs(list(experiments), filter_string=f"tags.`{TAG_KIND}` = 'search'",
                              max_results=500) if experiments else []  # fmt: skip
    names = sorted({experiments[run.info.experiment_id] for run in runs})
    if not names:
        return "this store holds no tune_lm search at all"
    return f"give --mlflow one of: {', '.join(names)}"
