"""The search's finalists confirmed (tuning/confirm.py) as runs under its MLflow run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tune_lm.tuning.console import say
from tune_lm.tuning.experiment import remove_lost_trial_folders
from tune_lm.tuning.results import Conclusion


def confirm_finalists(
    job: Any, conclusion: Conclusion, experiment_id: str, parent_id: str,
) -> tuple[list[dict[str, Any]], str | None, list, list]:  # fmt: skip
    """The finalists trained again with fresh seeds (:mod:`tune_lm.tuning.confirm`), as
    runs under the search's MLflow run: (per-finalist entries, what interrupted it, the
    MLflow logger, each run's (epochs, training seconds))."""
    from tune_lm.tracking.trial_runs import MLflowTrialLogger
    from tune_lm.tuning import confirm, private_api
    from tune_lm.tuning.summary import confirmation_table

    space, corpus = job.space, job.corpus
    made = confirm.plan(job.folder, conclusion, space)
    finalists, seeds = made["finalists"], made["seeds"]
    say(f"confirming {len(finalists)} finalist(s) ({', '.join(f['trial_id'] for f in finalists)}) "
        f"with fresh seeds {seeds}: {len(finalists) * len(seeds)} runs of the full budget, "
        f"in {job.path}/{confirm.CONFIRM_FOLDER} ...")  # fmt: skip
    logger = MLflowTrialLogger(job.tracking_uri, experiment_id, parent_id, space, corpus.vocab,
                               job.log_checkpoints)  # fmt: skip
    logger.finalists = finalists
    tuner = confirm.build_confirm_tuner(space, corpus, job.path, made, [logger])
    results, interrupted = private_api.fit_noting_interrupt(tuner)
    loggers = [c for c in private_api.tuner_callbacks(tuner) if isinstance(c, MLflowTrialLogger)]
    entries = confirm.summarise(results, made)
    if interrupted:  # Tune tells callbacks nothing of the trials its graceful stop ended
        for each in loggers:
            each.end_open_runs(f"stopped by {interrupted}; --resume continues it")
    else:
        remove_lost_trial_folders(f"{job.path}/{confirm.CONFIRM_FOLDER}",
                                  [Path(r.path).name for r in results])  # fmt: skip
        say("finalists, confirmed (mean ± sd over the fresh seeds; the winner has the lowest "
            "mean validation perplexity):")  # fmt: skip
        say(confirmation_table(entries))
    return entries, interrupted, loggers, confirm.spend(results)
