"""The MLflow parent run of a search: settings, versions and data in; summary and best
model out. Trials nest under it (see :mod:`tune_lm.tracking.trial_runs`)."""

from __future__ import annotations

import logging
import subprocess
import time
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.tracking import MlflowClient

import tune_lm
from tune_lm.lm import metrics as M
from tune_lm.lm.config import TrainConfig
from tune_lm.lm.corpus import Corpus
from tune_lm.lm.errors import ConfigError, RefusedAtStart
from tune_lm.tracking.tags import NOTE_TAG, PARENT_TAG, TAG_KIND, TAG_PATH
from tune_lm.tuning.results import TrialRow
from tune_lm.tuning.space import SearchSpace
from tune_lm.tuning.summary import describe, human, outcome_counts

log = logging.getLogger(__name__)


def _git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(tune_lm.__file__).parent,
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _versions() -> dict[str, str]:
    import optuna
    import ray
    import torch

    return {"tune_lm.version": tune_lm.__version__, "tune_lm.git_commit": _git_commit(),
            "ray.version": ray.__version__, "torch.version": torch.__version__,
            "optuna.version": optuna.__version__, "mlflow.version": mlflow.__version__}  # fmt: skip


def _space_params(space: SearchSpace) -> dict[str, str]:
    params = {"space.name": str(space.name), "space.seed": str(space.seed),
              "space.data": str(space.data)}  # fmt: skip
    for section in ("searcher", "scheduler", "budget", "resources"):
        for key, value in getattr(space, section).model_dump().items():
            params[f"{section}.{key}"] = str(value)
    params.update({f"fixed.{k}": str(v) for k, v in space.fixed.items()})
    params.update({f"search.{k}": str(v.model_dump()) for k, v in space.parameters.items()})
    params.update({f"derived.{k}": v for k, v in space.derived.items()})
    return params


def check_name_free(uri: str, name: str, path: str) -> None:
    """A new search named ``name`` must not join the MLflow experiment of a search kept
    elsewhere (same name, another --storage or folder): they would share its runs, its
    ``report --mlflow`` and its registered model's versions. ``uri``: a store that
    exists (asking about a SQLite file that does not would create it)."""
    from mlflow.exceptions import MlflowException

    from tune_lm.tracking.store import connect_uri

    try:
        client = MlflowClient(connect_uri(uri))
        experiment = client.get_experiment_by_name(name)
        runs = [] if experiment is None else client.search_runs(
            [experiment.experiment_id], filter_string=f"tags.`{TAG_KIND}` = 'search'",
            max_results=1000)  # fmt: skip
    except MlflowException:
        return  # the search itself will say what is wrong with the store
    elsewhere = sorted({run.data.tags.get(TAG_PATH) for run in runs} - {path, None})
    if elsewhere:
        raise ConfigError(
            f"MLflow experiment {name!r} in {uri} already holds the search at "
            f"{elsewhere[0]}{f' (and {len(elsewhere) - 1} more)' if len(elsewhere) > 1 else ''}"
            f": a search of the same name from {path} would share its runs, its report "
            f"--mlflow and its registered model's versions. Give another --name, or another "
            f"store (--tracking-uri)")


def start_parent_run(
    client: MlflowClient, name: str, path: str, space: SearchSpace, corpus: Corpus,
    space_file: Path | None, *, resume: bool,
) -> tuple[str, str]:  # fmt: skip
    """(experiment id, parent run id): the search's run, reused on --resume. A new
    search that finds it has a twin (same name, another folder, started on this store at
    the same moment: :func:`check_name_free` passed both) deletes its run and raises
    :class:`RefusedAtStart` unless its run is the earlier."""
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    try:
        experiment_id = experiment.experiment_id if experiment else client.create_experiment(
            name, tags={"mlflow.experimentKind": "custom_model_development"})  # UI: training
    except MlflowException:  # the twin created it first
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        experiment_id = experiment.experiment_id
    if resume:
        found = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{TAG_PATH}` = '{path}' and tags.`{TAG_KIND}` = 'search'",
            order_by=["attributes.start_time DESC"], max_results=1,
        )  # fmt: skip
        if found:
            client.update_run(found[0].info.run_id, "RUNNING")
            return experiment_id, found[0].info.run_id
    tags = {TAG_KIND: "search", TAG_PATH: path, "data.name": corpus.name,
            "data.fingerprint": corpus.fingerprint, **_versions()}  # fmt: skip
    run = client.create_run(experiment_id, run_name=name, tags=tags)
    run_id = run.info.run_id
    if not resume:
        _check_first(client, experiment_id, run, name, path)
    params = [Param(k, v[:6000]) for k, v in sorted(_space_params(space).items())]
    client.log_batch(run_id, params=params)
    if space_file is not None and space_file.is_file():
        client.log_artifact(run_id, str(space_file), "space")
    return experiment_id, run_id


def _check_first(client: MlflowClient, experiment_id: str, run: Any, name: str,
                 path: str) -> None:  # fmt: skip
    """Of two searches of one name from two folders started together, the earlier run
    (start time, then run id) goes on; the other deletes its run and is refused."""
    searches = client.search_runs([experiment_id], f"tags.`{TAG_KIND}` = 'search'",
                                  max_results=1000)  # fmt: skip
    mine = (run.info.start_time, run.info.run_id)
    earlier = sorted((r.info.start_time, r.info.run_id, r.data.tags.get(TAG_PATH)) for r in searches
                     if r.data.tags.get(TAG_PATH) not in (path, None)
                     and (r.info.start_time, r.info.run_id) < mine)  # fmt: skip
    if earlier:
        client.delete_run(run.info.run_id)
        raise RefusedAtStart(
            f"MLflow experiment {name!r} was taken, at the same moment, by the search at "
            f"{earlier[0][2]}, started from another folder on the same store: two searches "
            f"of one name would share its runs, its report --mlflow and its registered "
            f"model's versions. Nothing of this one ({path}) was kept; give it another "
            f"--name, or another store (--tracking-uri)")


def finish_parent_run(
    client: MlflowClient, run_id: str, best: Any, summary_files: list[Path], *, failed: bool,
    interrupted: bool = False, description: str | None = None, model_uri: str | None = None,
) -> None:
    """Summary tables as artifacts; the best trial's id, config and perplexities; the
    run's description (what the search was and what it found)."""
    for path in summary_files:
        folder = "report" if path.parent.name == "report" else "summary"
        client.log_artifact(run_id, str(path), folder)
    tags = [RunTag(NOTE_TAG, description)] if description else []
    if model_uri:
        tags.append(RunTag("tune_lm.best_model", model_uri))
    if best is not None:
        now = int(time.time() * 1000)
        metrics = [Metric("best_val_ppl", best.best_val_ppl, now, 0)]
        if best.test_ppl is not None:
            metrics.append(Metric("best_test_ppl", best.test_ppl, now, 0))
        params = [Param("best.trial_id", best.trial_id)]
        params += [Param(f"best.{k}", str(v)) for k, v in best.params.items()]
        existing = client.get_run(run_id).data.params
        params = [p for p in params if p.key not in existing]  # params are write-once
        tags.append(RunTag("tune_lm.best_trial_id", best.trial_id))
        client.log_batch(run_id, metrics=metrics, params=params)
    if tags:
        client.log_batch(run_id, tags=tags)
    status = RunStatus.KILLED if interrupted else RunStatus.FAILED if failed else RunStatus.FINISHED
    client.set_terminated(run_id, RunStatus.to_string(status))


def describe_search(name: str, plan: str, corpus: str, rows: list[TrialRow],
                    best: TrialRow | None, model_uri: str | None) -> str:  # fmt: skip
    """The parent run's description, two lines: what the search was, what it found."""
    what = f"Search {name!r} on {corpus}: {plan}."
    if best is None:
        return f"{what}\nNo trial finished an evaluation ({outcome_counts(rows)})."
    test = f", test ppl {best.test_ppl:.2f}" if best.test_ppl is not None else ""
    model = f", registered as {model_uri}" if model_uri else ""
    return (f"{what}\nBest: trial {best.trial_id} ({describe(best.params)}), val ppl "
            f"{best.best_val_ppl:.2f}{test}{model}. Trials: {outcome_counts(rows)}.")


def model_description(name: str, best: TrialRow, config: TrainConfig, corpus: str,
                      parent_run_id: str) -> str:  # fmt: skip
    """The registered model version's description: which search and trial, the whole
    configuration, and its perplexities."""
    test = f"{best.test_ppl:.2f}" if best.test_ppl is not None else "not scored"
    settings = ", ".join(f"{k} {human(v)}" for k, v in config.to_dict().items()
                         if v is not None and k not in ("device", "threads"))  # fmt: skip
    return (f"Best trial {best.trial_id} of search {name!r} (MLflow experiment {name!r}, "
            f"search run {parent_run_id}) on {corpus}: validation perplexity "
            f"{best.best_val_ppl:.2f} (best epoch), test perplexity {test} (scored once, on "
            f"the best-validation weights).\n\nSearched: {describe(best.params)}.\n\n"
            f"Configuration: {settings}.")


def record_results(
    client: MlflowClient, *, name: str, experiment_id: str, parent_id: str, plan: str,
    corpus: Corpus, rows: list[TrialRow], best: TrialRow | None, best_model: tuple | None,
    paths: dict[str, Path], interrupted: bool, known_model: str | None = None,
) -> tuple[str | None, list[str]]:  # fmt: skip
    """The search's results into MLflow: every trial's run settled as the summary says,
    the best model logged into its trial's run and registered, the summary and the
    description into the search's run, which ends (``known_model``: the best trial's model,
    registered before an ``--extend``, is not registered again). Returns (the model's URI,
    what could not be logged): a tracking server that went away loses nothing else."""
    from tune_lm.tracking.registry import log_best_model
    from tune_lm.tracking.trial_runs import settle_trial_runs

    failures: list[str] = []
    model_uri = known_model if not interrupted else None
    try:
        runs = settle_trial_runs(client, experiment_id, parent_id, rows)
        if best is not None and best_model is not None and not interrupted and not model_uri:
            run = runs.get(best.trial_id)
            run_id = run.info.run_id if run is not None else parent_id
            metrics = {M.BEST_VAL_PPL: best.best_val_ppl, M.TEST_PPL: best.test_ppl}
            description = model_description(name, best, best_model[0], corpus.name, parent_id)
            model_uri = log_best_model(run_id, name, best_model[0], corpus.vocab, best_model[1],
                                       metrics, description)  # fmt: skip
        # Interrupted: the best so far is not the search's answer (params are write-once).
        finish_parent_run(
            client, parent_id, None if interrupted else best, list(paths.values()),
            failed=best is None, interrupted=interrupted, model_uri=model_uri,
            description=describe_search(name, plan, corpus.name, rows,
                                        None if interrupted else best, model_uri),
        )  # fmt: skip
    except Exception as error:  # keep the search's own results; say what is missing
        failures.append(f"finish the search's run: {type(error).__name__}: {error}")
    return model_uri, failures


def log_compute(client: MlflowClient, run_id: str, spent: dict[str, Any]) -> None:
    """The compute ledger (tuning/compute.py) as the search run's metrics,
    ``compute.PHASE.KEY``; a tracking server that is gone loses only these."""
    now = int(time.time() * 1000)
    metrics = [Metric(f"compute.{name}.{key}", float(value), now, 0)
               for name, part in spent.items() for key, value in part.items()]  # fmt: skip
    try:
        client.log_batch(run_id, metrics=metrics)
    except Exception as error:
        log.warning("MLflow: could not log the compute ledger: %s", error)


def end_parent_run(client: MlflowClient, parent_id: str, *, killed: bool) -> None:
    """After a search failed or was killed: its run and its trials' runs still open
    KILLED or FAILED, never RUNNING (a second Ctrl-C during the graceful stop, or one
    while the results are recorded, leaves trials' runs open; --resume continues them)."""
    status = "KILLED" if killed else "FAILED"
    try:
        experiment_id = client.get_run(parent_id).info.experiment_id
        children = client.search_runs(
            [experiment_id], f"tags.`{PARENT_TAG}` = '{parent_id}' and "
            "attributes.status = 'RUNNING'", max_results=10_000)  # fmt: skip
        for run_id in [child.info.run_id for child in children] + [parent_id]:
            if client.get_run(run_id).info.status == "RUNNING":
                client.set_terminated(run_id, status)
    except Exception as error:  # the tracking server may be the thing that failed
        log.warning("MLflow: could not end the search's run %s: %s", parent_id, error)
