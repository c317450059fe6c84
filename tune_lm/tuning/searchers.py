"""Searcher (Optuna or grid) and scheduler (ASHA or FIFO) from a search space."""

from __future__ import annotations

import contextlib
import json
import logging
import math
from pathlib import Path
from typing import Any

import optuna
from ray.tune.result import TRAINING_ITERATION
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import ConcurrencyLimiter, Searcher
from ray.tune.search.optuna import OptunaSearch

from tune_lm.lm import metrics as M
from tune_lm.tuning import private_api
from tune_lm.tuning.baselines import is_baseline
from tune_lm.tuning.layout import STOPS_FILE, STUDY_FILE, STUDY_NAME
from tune_lm.tuning.mo_asha import MultiObjectiveASHA
from tune_lm.tuning.pbt import make_pbt
from tune_lm.tuning.rung_history import (
    RefilledOnRestore,
    read_brackets,
    record_bracket,
    rung_values,
)
from tune_lm.tuning.rung_sampler import VALUE_AT_EPOCH, RungAwareTPESampler
from tune_lm.tuning.space import SearchSpace
from tune_lm.tuning.tune_space import to_tune_space

log = logging.getLogger(__name__)
TUNE_TRIAL_ID = "tune_trial_id"  # an Optuna trial's user attribute: the Tune trial it is


class StopLedger:
    """ASHA's own stop decisions, kept in a file beside the experiment as it makes them.

    A trial that ends before its last epoch was stopped by ASHA, by the time budget or
    by Ctrl-C; only this record tells them apart (the scheduler, the searcher and the
    callbacks are pickled apart with the experiment, so they share a file, not an
    object)."""

    def __init__(self, folder: Path | None) -> None:
        self.path = folder.resolve() / STOPS_FILE if folder is not None else None
        self._memory: dict[str, float] = {}

    def record(self, trial_id: str, epoch: float) -> None:
        self._memory[trial_id] = epoch
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as out:
                out.write(json.dumps({"trial_id": trial_id, "epoch": epoch}) + "\n")

    def stopped(self) -> dict[str, float]:
        """trial id -> the epoch at which ASHA stopped it."""
        found = dict(self._memory)
        if self.path is not None and self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                    found[entry["trial_id"]] = float(entry["epoch"])
                except (ValueError, KeyError, TypeError):  # a line cut by a crash
                    continue
        return found


class RecordingASHA(RefilledOnRestore, ASHAScheduler):
    """Ray's ASHA (or, with several brackets, Hyperband), writing each early stop it
    decides into a :class:`StopLedger`; the space's ``baselines`` are never stopped early
    (see :mod:`tune_lm.tuning.baselines`). Restored, it refills its rungs from the earlier
    trials (:class:`~tune_lm.tuning.rung_history.RefilledOnRestore`)."""

    def __init__(self, *, ledger: StopLedger, max_t: float,
                 baselines: list[dict[str, Any]] | None = None, **kwargs: Any) -> None:  # fmt: skip
        super().__init__(max_t=max_t, **kwargs)
        self.ledger, self.max_epochs = ledger, max_t
        self.baselines = [dict(b) for b in baselines or ()]
        if private_api.asha_bracket_count(self) > 1:
            self.label = "Hyperband"

    @property
    def folder(self) -> Path | None:
        """The experiment's local folder (None: remote storage, or no folder at all)."""
        return self.ledger.path.parent if self.ledger.path is not None else None

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.__dict__.pop("_bracket_of", None)  # read again from the folder

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        super().on_trial_add(tune_controller, trial)
        self.note_restored(trial)
        self._keep_bracket(trial.trial_id)

    def _keep_bracket(self, trial_id: str) -> None:
        """Hyperband: a trial stays in the bracket it was first put in (noted on disk), so
        that a restored trial is judged against the same rungs as before."""
        if self.folder is None or private_api.asha_bracket_count(self) == 1:
            return
        if "_bracket_of" not in self.__dict__:
            self._bracket_of = read_brackets(self.folder)
        if trial_id in self._bracket_of:
            private_api.put_in_bracket(self, trial_id, self._bracket_of[trial_id])
        else:
            index = private_api.trial_bracket(self, trial_id)
            self._bracket_of[trial_id] = index
            record_bracket(self.folder, trial_id, index)

    def refill_rungs(self) -> int:
        """Record at each rung of each bracket what the trials that had ended before the
        restore reached there, read from their result.json (a Hyperband trial only in the
        bracket ``on_trial_add`` put it back in). Returns how many values were added."""
        if self.folder is None:
            return 0  # remote storage: the trials' results are not in a local folder
        brackets = [private_api.asha_rungs(self, index)
                    for index in range(private_api.asha_bracket_count(self))]  # fmt: skip
        found = rung_values(self.folder, {m for rungs in brackets for m, _ in rungs})
        sign, added = private_api.asha_metric_sign(self), 0
        for index, rungs in enumerate(brackets):
            for milestone, recorded in rungs:
                for trial_id, (value,) in found.get(milestone, {}).items():
                    if (trial_id in self._ended_before and trial_id not in recorded
                            and private_api.trial_bracket(self, trial_id) == index):  # fmt: skip
                        recorded[trial_id] = sign * value
                        added += 1
        return added

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        self.refill_once()
        super().on_trial_complete(tune_controller, trial, result)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        self.refill_once()
        decision = super().on_trial_result(tune_controller, trial, result)
        epoch = result.get(M.EPOCH)
        if decision == TrialScheduler.STOP and epoch is not None and epoch < self.max_epochs:
            if self.baselines and is_baseline(trial.config, self.baselines):
                return TrialScheduler.CONTINUE  # its value still counted at the rung
            self.ledger.record(trial.trial_id, float(epoch))
        return decision


class EpochAwareOptunaSearch(OptunaSearch):
    """Ray's OptunaSearch, told the truth about trials that ASHA stopped early.

    Ray reports a trial that ASHA stopped as COMPLETE with its last value. For TPE that
    value is a full-budget observation, so a configuration judged after 1 epoch
    competes with ones trained for 40, and the early epochs' high perplexity makes
    promising regions look bad (or, with a fast starter, good). Optuna's own answer
    for this situation is the PRUNED state: the intermediate values we already report
    per evaluation stay attached, and TPE ranks pruned trials after completed ones,
    deeper-reaching first (by their last step, then value). That is exactly ASHA's
    verdict — "worse than the survivors at that rung" — so a trial that stopped before
    ``max_epochs`` is told as PRUNED; one that ran its full budget is COMPLETE.
    A diverged trial (``val_ppl`` = inf) is COMPLETE with inf: the worst possible value,
    which is what TPE should learn about that region. A trial that ended early without an
    ASHA verdict (the time budget ran out) is FAIL: its curve judges nothing, and TPE
    ignores FAIL trials.

    With several objectives Optuna takes no intermediate values and its samplers (TPE,
    NSGA-II) learn only from COMPLETE trials, so a PRUNED trial would teach them nothing.
    There every evaluation's values are kept as user attributes (``values_at_epoch_E``),
    and a trial ASHA stopped is told COMPLETE with the values it was judged on, at its
    rung (user attribute ``stopped_at_epoch``): a low-budget observation, worse than what
    it would have reached, which is the verdict ASHA gave it.
    """

    def __init__(self, *args: Any, max_epochs: float, ledger: StopLedger | None = None,
                 value_rungs: list[float] | None = None, **kwargs: Any) -> None:  # fmt: skip
        super().__init__(*args, **kwargs)
        self._max_epochs = max_epochs
        self._value_rungs = set(value_rungs or ())  # epochs whose value a rung-aware TPE reads
        self._last_step: dict[str, int] = {}
        self._ledger = ledger

    def suggest(self, trial_id: str) -> dict | None:
        """Ray's suggestion; the Optuna trial notes the Tune trial it is (for a study
        closed after the search: see :func:`fail_unfinished_trials`)."""
        config = super().suggest(trial_id)
        ot_trial = private_api.optuna_trials(self).get(trial_id)
        if isinstance(config, dict) and ot_trial is not None:
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError, RuntimeError):
                ot_trial.set_user_attr(TUNE_TRIAL_ID, trial_id)
        return config

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        try:
            super().on_trial_result(trial_id, result)
        except optuna.exceptions.UpdateFinishedTrialError:
            # After a driver kill, Ray may re-run a trial from its last snapshot that the
            # (live) study already closed; the study's record stands, the search goes on.
            private_api.closed_trials(self).add(trial_id)
        self._last_step[trial_id] = result.get(TRAINING_ITERATION)
        values = self._objective_values(result)
        ot_trial = private_api.optuna_trials(self).get(trial_id)
        if values is not None and ot_trial is not None and M.EPOCH in result:
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError, RuntimeError):
                ot_trial.set_user_attr(f"values_at_epoch_{result[M.EPOCH]:g}", values)
        self._note_rung_value(ot_trial, result)

    def _note_rung_value(self, ot_trial: Any, result: dict | None) -> None:
        """For a rung-aware TPE: the trial's val_ppl at a rung, as a user attribute."""
        if ot_trial is None or not result or result.get(M.EPOCH) not in self._value_rungs:
            return
        value = result.get(M.VAL_PPL)
        if isinstance(value, int | float) and math.isfinite(value):
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError, RuntimeError):
                ot_trial.set_user_attr(VALUE_AT_EPOCH.format(epoch=result[M.EPOCH]), value)

    def _objective_values(self, result: dict | None) -> list[float] | None:
        """A multi-objective result's values in the study's order (None: one objective,
        or a value missing or not finite)."""
        if not isinstance(self.metric, list) or not result:
            return None
        values = [result.get(metric) for metric in self.metric]
        if not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
            return None
        return [float(v) for v in values]

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        told, asked = private_api.closed_trials(self), private_api.optuna_trials(self)
        if trial_id in told or trial_id not in asked:
            return super().on_trial_complete(trial_id, result, error)
        stopped_early = (
            not error
            and result is not None
            and result.get(M.EPOCH, self._max_epochs) < self._max_epochs
            and result.get(M.VAL_PPL, 0) != float("inf")
        )
        if not stopped_early:
            return super().on_trial_complete(trial_id, result, error)
        ot_trial, study = asked[trial_id], private_api.optuna_study(self)
        step = result.get(TRAINING_ITERATION)
        if self._ledger is not None and trial_id not in self._ledger.stopped():
            closed = (optuna.exceptions.UpdateFinishedTrialError, RuntimeError, ValueError)
            with contextlib.suppress(*closed):  # stopped by the time budget, not by ASHA
                study.tell(ot_trial, state=optuna.trial.TrialState.FAIL)
            told.add(trial_id)
            return None
        try:
            values = self._objective_values(result)
            if values is not None:  # several objectives: the values it was judged on
                ot_trial.set_user_attr("stopped_at_epoch", result.get(M.EPOCH))
                ot_trial.set_user_attr(f"values_at_epoch_{result[M.EPOCH]:g}", values)
                study.tell(ot_trial, values)
                told.add(trial_id)
                return None
            self._note_rung_value(ot_trial, result)  # the value it was judged on
            single_objective = not isinstance(self.metric, list)  # MO trials take no report
            if single_objective and step is not None and self._last_step.get(trial_id) != step:
                # Ray withholds the result that made ASHA stop a trial; it is the value
                # the trial was judged on, so Optuna gets it as its last value.
                ot_trial.report(result[M.VAL_PPL], step)
            study.tell(ot_trial, state=optuna.trial.TrialState.PRUNED)
        except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError, ValueError) as error:
            # Routine after --resume: ASHA stopped the trial just before the interrupt, Ray's
            # snapshot missed it, and the re-run was stopped again. Its first record stands.
            log.info("optuna: trial %s was already closed in the study (%s); its first "
                     "record stands", trial_id, error)  # fmt: skip
        told.add(trial_id)

    def restore(self, checkpoint_path: str) -> None:
        """After a driver restart, trials Optuna handed out after Ray's last snapshot of
        the search are unknown to Ray: mark them FAIL so the study has no ghosts."""
        super().restore(checkpoint_path)
        self.fail_orphans()

    def fail_orphans(self) -> None:
        """Mark FAIL the study's RUNNING trials that this searcher does not know."""
        study = private_api.optuna_study(self)
        if study is None:
            return
        known = {trial.number for trial in private_api.optuna_trials(self).values()}
        for trial in study.get_trials(deepcopy=False):
            if trial.state == optuna.trial.TrialState.RUNNING and trial.number not in known:
                study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
                log.info("optuna trial %d was lost with the previous driver", trial.number)


def make_sampler(space: SearchSpace) -> optuna.samplers.BaseSampler:
    seed = space.seed
    sampler = space.searcher.sampler
    if sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if sampler == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed)
    if sampler == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    startup = space.searcher.n_startup_trials
    options = {"seed": seed, **({"n_startup_trials": startup} if startup is not None else {})}
    if space.searcher.rung_aware:
        return RungAwareTPESampler(rungs=[*space.asha_rungs, space.epochs], **options)
    return optuna.samplers.TPESampler(**options)


def make_searcher(space: SearchSpace, experiment_dir: Path | None,
                  ledger: StopLedger | None = None,
                  priors: list[dict[str, Any]] | None = None) -> Searcher | None:  # fmt: skip
    """Optuna, its study persisted as a journal in ``experiment_dir`` (in memory when
    None); None for a grid, which Tune's own variant generator expands. ``priors``: an
    earlier search's trials (tuning/warm_start.py), added to a new study as COMPLETE."""
    if space.searcher.type != "optuna" or space.scheduler.type == "pbt":
        return None  # Tune's own variant generator: a grid, or PBT's random population
    storage = None
    if experiment_dir is not None:
        experiment_dir.mkdir(parents=True, exist_ok=True)
        storage = optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(experiment_dir / STUDY_FILE))
        )
    searcher = EpochAwareOptunaSearch(
        space=searcher_space(space),
        metric=space.objectives if len(space.objectives) > 1 else M.VAL_PPL,
        mode=space.objective_modes if len(space.objectives) > 1 else "min",
        sampler=make_sampler(space),
        study_name=STUDY_NAME,
        storage=storage,
        max_epochs=space.epochs,
        ledger=ledger,
        value_rungs=[*space.asha_rungs, space.epochs] if space.searcher.rung_aware else None,
        points_to_evaluate=[dict(b) for b in space.baselines] or None,
    )
    searcher.fail_orphans()  # a study left by a driver killed before Tune's first snapshot
    if priors:
        add_priors(private_api.optuna_study(searcher), searcher_space(space), priors)
    if space.budget.max_concurrent:
        return ConcurrencyLimiter(searcher, max_concurrent=space.budget.max_concurrent)
    return searcher


def searcher_space(space: SearchSpace) -> dict[str, Any]:
    """The space as Optuna's distributions (as OptunaSearch holds it)."""
    return OptunaSearch.convert_search_space(to_tune_space(space))


def add_priors(study: optuna.Study, distributions: dict[str, Any],
               priors: list[dict[str, Any]]) -> int:  # fmt: skip
    """An earlier search's trials as COMPLETE trials of ``study`` (once: a study that has
    them already, e.g. restarted after a kill, is left alone). Returns how many."""
    if any("warm_start_from" in t.user_attrs for t in study.get_trials(deepcopy=False)):
        return 0
    study.add_trials([
        optuna.trial.create_trial(
            params={name: prior["params"][name] for name in distributions},
            distributions=distributions, values=prior["values"],
            user_attrs={"warm_start_from": prior["trial_id"]})
        for prior in priors
    ])  # fmt: skip
    return len(priors)


def make_scheduler(space: SearchSpace, ledger: StopLedger | None = None) -> TrialScheduler:
    """ASHA (one bracket) or Hyperband (several) on validation perplexity with epochs as
    time (so it can act within an epoch when trials evaluate every N tokens), its stops
    recorded in ``ledger``, the space's baselines exempt from them; PBT; or FIFO."""
    if space.scheduler.type == "fifo":
        return FIFOScheduler()
    if space.scheduler.type == "pbt":
        return make_pbt(space)
    if space.scheduler.type == "mo_asha":
        return MultiObjectiveASHA(
            ledger=ledger or StopLedger(None), time_attr=M.EPOCH, max_t=space.epochs,
            grace_period=space.scheduler.grace_period,
            reduction_factor=space.scheduler.reduction_factor,
            objectives=list(space.objectives), modes=space.objective_modes,
            rungs=space.asha_rungs, baselines=list(space.baselines),
        )  # fmt: skip
    return RecordingASHA(
        ledger=ledger or StopLedger(None),
        time_attr=M.EPOCH,
        max_t=space.epochs,
        grace_period=space.scheduler.grace_period,
        reduction_factor=space.scheduler.reduction_factor,
        brackets=space.scheduler.brackets if space.scheduler.type == "hyperband" else 1,
        baselines=list(space.baselines),
    )
