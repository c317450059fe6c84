"""MLflow: one parent run per search, one nested child run per trial.

Everything is logged from the driver (a Tune callback), so trials on other machines
need no MLflow access of their own and there is a single writer per store. Runs are
found again by tags (``tune_lm.experiment_path``, ``tune_lm.trial_id``), so a resumed
search keeps logging into the same runs: no duplicates. A tracking server that goes
away does not stop training: failed calls are counted and reported at the end.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.tracking import MlflowClient
from ray.tune import Callback

from tune_lm.lm import metrics as M
from tune_lm.lm.checkpoint import save_model
from tune_lm.lm.model import RNNLanguageModel
from tune_lm.tracking.store import connect_uri
from tune_lm.tracking.tags import PARENT_TAG, TAG_FINALIST, TAG_KIND, TAG_STATUS, TAG_TRIAL
from tune_lm.tuning import private_api
from tune_lm.tuning.results import TrialRow, trial_status
from tune_lm.tuning.searchers import StopLedger
from tune_lm.tuning.space import SearchSpace
from tune_lm.tuning.summary import short_label

log = logging.getLogger(__name__)

LOGGED_METRICS = tuple(m for m in M.EVALUATION_METRICS if m != M.STEP)
PAUSE_AFTER_FAILURE_S = 30.0
PLACEMENT_KEYS = ("node_id", "node_ip", "gpu_ids")  # tags: where a trial last ran


class MLflowTrialLogger(Callback):
    """Tune callback: a child run per trial with params, per-evaluation metrics
    (step = evaluation index), a status tag and the best checkpoint as an artifact.

    It holds only plain data (Ray pickles callbacks with the experiment and restores
    them on --resume); the MLflow client is created on first use.
    """

    def __init__(
        self,
        tracking_uri: str,
        experiment_id: str,
        parent_run_id: str,
        space: SearchSpace,
        vocab: tuple[str, ...],
        log_checkpoints: str = "best",
        ledger: StopLedger | None = None,
    ) -> None:
        self.tracking_uri, self.experiment_id = tracking_uri, experiment_id
        self.parent_run_id, self.space, self.vocab = parent_run_id, space, vocab
        self.log_checkpoints = log_checkpoints
        self.ledger = ledger
        self.failures: list[str] = []
        self._client: MlflowClient | None = None
        self._runs: dict[str, str] = {}  # trial id -> run id
        self._numbers: dict[str, int] = {}  # trial id -> its place in the search (1, 2, ...)
        self._last_step: dict[str, int] = {}  # trial id -> last step logged (no duplicates)
        self._closed: set[str] = set()  # trial ids whose runs this logger ended
        self._paused_until = 0.0
        # Confirmation runs (tuning/confirm.py): each trial's config names a finalist (its
        # index here) and a seed, not the searched values themselves.
        self.finalists: list[dict[str, Any]] | None = None

    def values(self, config: dict[str, Any]) -> dict[str, Any]:
        """The searched values of a trial's Tune config (a confirmation's: its finalist's,
        with its seed)."""
        if self.finalists is None:
            return self.space.searched(config)
        return {**self.finalists[config["finalist"]]["params"], "seed": config["seed"]}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_client=None, _runs={}, _last_step={}, failures=[], _paused_until=0.0,
                     _numbers={}, _closed=set())  # fmt: skip
        return state

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient(connect_uri(self.tracking_uri))
        return self._client

    def _safe(self, what: str, call: Any, *args: Any, **kwargs: Any) -> Any:
        """Run an MLflow call; a failure is remembered, never raised into Tune.

        After a failure, calls are skipped (and counted) for ``PAUSE_AFTER_FAILURE_S``:
        a server that is down would otherwise cost every result its timeout, and Tune's
        event loop (this callback runs in it) would slow the whole search down."""
        if time.monotonic() < self._paused_until:
            self.failures.append(f"{what}: skipped, the tracking server was unreachable")
            return None
        try:
            return call(*args, **kwargs)
        except Exception as error:  # the server may be gone: keep training
            self.failures.append(f"{what}: {type(error).__name__}: {str(error)[:200]}")
            log.warning("MLflow: could not %s (%s)", what, error)
            if unreachable(error):  # not a local error (a checkpoint file gone, a bad value)
                self._paused_until = time.monotonic() + PAUSE_AFTER_FAILURE_S
            return None

    # -- runs ---------------------------------------------------------------------------
    def _run_for(self, trial: Any) -> str | None:
        trial_id = trial.trial_id
        if trial_id in self._runs:
            return self._runs[trial_id]
        found = self._safe(
            "look up the trial's run", self.client.search_runs, [self.experiment_id],
            filter_string=f"tags.`{PARENT_TAG}` = '{self.parent_run_id}' "
            f"and tags.`{TAG_TRIAL}` = '{trial_id}'",
        )  # fmt: skip
        if found:
            run_id = found[0].info.run_id
            history = self._safe(
                "read the trial's history", self.client.get_metric_history, run_id, M.VAL_PPL
            )
            self._last_step[trial_id] = max((m.step for m in history or []), default=0)
            self._safe("reopen the trial's run", self.client.update_run, run_id, "RUNNING")
        else:
            searched = self.values(trial.config)
            number = self._numbers.get(trial_id)
            label = short_label(searched) + (f" #{number}" if number else "")
            tags = {PARENT_TAG: self.parent_run_id, TAG_KIND: "trial", TAG_TRIAL: trial_id}
            if self.finalists is not None:
                finalist = self.finalists[trial.config["finalist"]]
                label = f"confirm {finalist['trial_id']} seed {trial.config['seed']}"
                tags.update({TAG_KIND: "confirmation", TAG_FINALIST: finalist["trial_id"],
                             "tune_lm.seed": str(trial.config["seed"])})  # fmt: skip
            run = self._safe(
                "create the trial's run", self.client.create_run, self.experiment_id,
                run_name=label or trial_id, tags=tags,
            )  # fmt: skip
            if run is None:
                return None
            run_id = run.info.run_id
            config = self.space.trial_config(searched).to_dict()
            params = [Param(k, str(v)) for k, v in sorted(config.items())]
            self._safe("log the trial's params", self.client.log_batch, run_id, params=params)
        self._runs[trial_id] = run_id
        return run_id

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._numbers.update({t.trial_id: i for i, t in enumerate(trials, start=1)})
        self._run_for(trial)

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        run_id = self._run_for(trial)
        step = int(result.get(M.STEP, result.get("training_iteration", 0)))
        if run_id is None or step <= self._last_step.get(trial.trial_id, 0):
            return  # a step re-reported after a resume is logged once
        now = int(time.time() * 1000)
        metrics = [
            Metric(key, float(value), now, step)
            for key, value in result.items()
            if (key in LOGGED_METRICS or M.is_test_at_epoch(key))
            and isinstance(value, int | float)
        ]
        placement = [RunTag(f"tune_lm.{key}", str(result[key]))
                     for key in PLACEMENT_KEYS if key in result]  # fmt: skip
        self._safe("log metrics", self.client.log_batch, run_id, metrics=metrics, tags=placement)
        self._last_step[trial.trial_id] = step

    def on_checkpoint(
        self, iteration: int, trials: list, trial: Any, checkpoint: Any, **info: Any
    ) -> None:
        if self.log_checkpoints == "all":
            step = int((trial.last_result or {}).get(M.STEP, iteration))
            self._log_weights(trial, checkpoint, f"checkpoints/step_{step:04d}", "model_state")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finish(trial, error=None)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        message = getattr(trial, "error_msg", None) or "the trial raised an error"
        self._finish(trial, error=str(message))

    def _finish(self, trial: Any, error: str | None) -> None:
        run_id = self._run_for(trial)
        if run_id is None:
            return
        last = trial.last_result or {}
        asha = self.ledger is not None and trial.trial_id in self.ledger.stopped()
        status = trial_status([last] if M.EPOCH in last else [], error, self.space,
                              asha_stopped=asha)  # fmt: skip
        history = self._safe(
            "read the trial's history", self.client.get_metric_history, run_id, M.VAL_PPL
        )
        best = min((m.value for m in history or []), default=math.inf)
        now, step = int(time.time() * 1000), int(last.get(M.STEP, 0))
        # At the last evaluation's step: the curves (train_time_s, ...) keep their points.
        final = [Metric(M.BEST_VAL_PPL, best, now, step),
                 Metric(M.EPOCHS_RUN, float(last.get(M.EPOCH, 0.0)), now, step)]  # fmt: skip
        tags = [RunTag(TAG_STATUS, status.split(":")[0])]
        if status.startswith("stopped early by ASHA"):
            tags.append(RunTag("tune_lm.stopped_at_epoch", f"{last.get(M.EPOCH, 0):g}"))
        if error:
            tags.append(RunTag("tune_lm.error", error[:5000]))
        self._safe("log the trial's result", self.client.log_batch, run_id, metrics=final,
                   tags=tags)  # fmt: skip
        if self.log_checkpoints in ("best", "all") and trial.checkpoint is not None:
            self._log_weights(trial, trial.checkpoint, "checkpoints/best", "best_model")
        run_status = RunStatus.to_string(RunStatus.FAILED if error else RunStatus.FINISHED)
        self._safe("close the trial's run", self.client.set_terminated, run_id, run_status)
        self._closed.add(trial.trial_id)

    def end_open_runs(self, status: str) -> None:
        """After an interruption: the runs this logger opened and Tune never reported
        finished end KILLED, tagged ``status`` (--resume reopens them)."""
        for trial_id, run_id in self._runs.items():
            if trial_id in self._closed:
                continue
            self._safe("tag the interrupted run", self.client.set_tag, run_id, TAG_STATUS, status)
            self._safe("close the interrupted run", self.client.set_terminated, run_id,
                       RunStatus.to_string(RunStatus.KILLED))  # fmt: skip
            self._closed.add(trial_id)

    def _log_weights(self, trial: Any, checkpoint: Any, folder: str, which: str) -> None:
        """A model checkpoint (weights + config + vocabulary) as an artifact of the run."""
        from tune_lm.tuning.trainable import load_state  # the Ray-side checkpoint layout

        run_id = self._runs.get(trial.trial_id)
        state = self._safe("read the checkpoint", load_state, checkpoint)
        if run_id is None or not state or state.get(which) is None:
            return
        config = self.space.trial_config(self.space.searched(trial.config))
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.pt"
            model = RNNLanguageModel.from_config(config, len(self.vocab))
            save_model(path, model, config, self.vocab, model_state=state[which])
            self._safe("upload the checkpoint", self.client.log_artifact, run_id, str(path),
                       folder)  # fmt: skip


UNREACHABLE_SIGNS = ("max retries exceeded", "connection refused", "failed to establish",
                     "timed out", "could not connect", "connection reset", "name or service",
                     "temporarily unavailable", "server closed the connection")


def unreachable(error: BaseException) -> bool:
    """Whether ``error`` says the tracking store could not be reached (a network error,
    in the exception or what caused it, or in the text MLflow wraps it in), as opposed to
    a local one such as a missing checkpoint file."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ConnectionError | TimeoutError) or type(seen).__name__ in (
            "ConnectionError", "ConnectTimeout", "ReadTimeout", "Timeout"):  # requests'
            return True
        if any(sign in str(seen).lower() for sign in UNREACHABLE_SIGNS):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def trial_runs(client: MlflowClient, experiment_id: str, parent_run_id: str) -> dict[str, Any]:
    """trial id -> its MLflow run (the trials of one search)."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}' and tags.`{TAG_KIND}` = 'trial'",
        max_results=50_000,
    )  # fmt: skip
    return {str(run.data.tags.get(TAG_TRIAL)): run for run in runs}


def run_state(status: str) -> str:
    """The MLflow run state a trial's status ends in: FINISHED (it ran as far as the
    search let it: completed, stopped by ASHA, diverged), FAILED, or KILLED (stopped by
    the time budget or an interruption; --resume reopens an interrupted one)."""
    if status.startswith("failed"):
        return RunStatus.to_string(RunStatus.FAILED)
    if status.startswith(("completed", "stopped early by ASHA", "diverged")):
        return RunStatus.to_string(RunStatus.FINISHED)
    return RunStatus.to_string(RunStatus.KILLED)


def settle_trial_runs(client: MlflowClient, experiment_id: str, parent_run_id: str,
                      rows: list[TrialRow]) -> dict[str, Any]:  # fmt: skip
    """Every trial's run ends as the summary says (Tune tells callbacks nothing about a
    trial the time budget or an interruption stopped): its status tag, a terminal state,
    its best perplexity and epochs. Returns the runs, by trial id."""
    runs = trial_runs(client, experiment_id, parent_run_id)
    for row in rows:
        run = runs.get(row.trial_id)
        if run is None:
            continue
        tag, state = row.status.split(":")[0], run_state(row.status)
        if run.data.tags.get(TAG_STATUS) == tag and run.info.status == state:
            continue
        client.set_tag(run.info.run_id, TAG_STATUS, tag)
        if M.BEST_VAL_PPL not in run.data.metrics and math.isfinite(row.best_val_ppl):
            client.log_metric(run.info.run_id, M.BEST_VAL_PPL, row.best_val_ppl)
            client.log_metric(run.info.run_id, M.EPOCHS_RUN, float(row.epochs_run))
        client.set_terminated(run.info.run_id, state)
    return runs


def delete_lost_trial_runs(
    client: MlflowClient, experiment_id: str, parent_run_id: str, trial_folders: list[str]
) -> list[str]:
    """Soft-delete the child runs of trials Ray no longer knows: trials started after
    Ray's last snapshot before a driver kill, which ``--resume`` runs again under new
    ids. Afterwards MLflow holds one run per trial of the experiment, like Ray and the
    Optuna study (where such trials are FAIL). ``trial_folders``: the folder names of the
    trials Ray knows (``train_trial_<id>_<n>_...``). Returns the trial ids removed."""
    try:
        runs = list(trial_runs(client, experiment_id, parent_run_id).values())
    except Exception as error:  # the tracking server may be gone: the search stands
        log.warning("MLflow: could not look for runs of lost trials: %s", error)
        return []

    def known(run: Any) -> bool:
        trial_id = str(run.data.tags.get(TAG_TRIAL))
        return any(private_api.is_trial_folder(name, trial_id) for name in trial_folders)

    lost = [run for run in runs if not known(run)]
    for run in lost:
        client.set_tag(run.info.run_id, TAG_STATUS, "lost with a killed driver; run again")
        client.delete_run(run.info.run_id)
    return [str(run.data.tags.get(TAG_TRIAL)) for run in lost]
