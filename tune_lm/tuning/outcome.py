"""A search's last lines: the winner, its model, where everything is and how to go on,
or why there is no winner; an experiment with nothing left to resume is marked finished."""

from __future__ import annotations

import time
from pathlib import Path

from tune_lm.lm.errors import TuneLMError
from tune_lm.tuning.console import say
from tune_lm.tuning.experiment import mark_finished
from tune_lm.tuning.results import Conclusion
from tune_lm.tuning.space import SearchSpace
from tune_lm.tuning.summary import describe, outcome_counts


def print_outcome(conclusion: Conclusion, paths: dict[str, Path], model_uri: str | None,
                  interrupted: str | None, *, space: SearchSpace, path: str, hint: str,
                  store_flag: str = "", confirmed_winner: str | None = None) -> int:  # fmt: skip
    """The last lines: the winner, the model, where everything is, and how to go on
    (``hint``: the command that continues the experiment at ``path``); marks the experiment
    finished when nothing is left to resume (``store_flag``: the --tracking-uri the
    model's store needs, if not the default; ``confirmed_winner``: the trial that
    confirmation with fresh seeds chose, if any). Returns the exit code."""
    rows, best = conclusion.rows, conclusion.best
    if interrupted:
        say(f"interrupted ({interrupted}): {len(conclusion.finished)} trial(s) with results, "
            f"summary in {paths['md']}; running trials stopped at their last checkpoint. "
            f"Continue with: {hint}")  # fmt: skip
        return 128 + {"SIGTERM": 15, "SIGHUP": 1}.get(interrupted, 2)  # the shell's codes
    all_failed = bool(rows) and all(row.status.startswith("failed") for row in rows)
    if (best is None and space.budget.time_budget and not all_failed
            and not any(row.evaluated > 0 for row in rows)):  # fmt: skip
        raise TuneLMError(f"the time budget ({space.budget.time_budget}) ran out before any "
                          f"trial reported a result ({len(rows)} started); raise "
                          f"budget.time_budget or --time-budget")  # fmt: skip
    if best is None and rows and all(row.status.startswith("diverged") for row in rows):
        raise TuneLMError(f"every trial diverged ({len(rows)}: its loss became inf or NaN), so "
                          f"there is no best trial; search a lower learning rate (lr), or clip "
                          f"the gradients (clip). Summary in {paths['md']}")  # fmt: skip
    if best is None:
        raise TuneLMError(f"every trial failed ({len(rows)}); see the errors above and the "
                          f"trial logs under {path}")  # fmt: skip
    test = f"{best.test_ppl:.2f}" if best.test_ppl is not None else "n/a"
    say(f"best trial {best.trial_id}: val ppl {best.best_val_ppl:.2f}, test ppl {test} | "
        f"{describe(best.params)}")  # fmt: skip
    say(f"trials: {outcome_counts(rows)}")
    if model_uri:
        whose = ""  # the registered weights are the best single run's, not a confirmation's
        if confirmed_winner:
            whose = f", trial {best.trial_id}'s: the best single run" + (
                ", also the confirmed winner" if confirmed_winner == best.trial_id else
                f"; the confirmed winner {confirmed_winner} is not registered")  # fmt: skip
        say(f"best model: {model_uri}{whose} (try: python -m tune_lm.generate --model "
            f"{model_uri}{store_flag})")  # fmt: skip
    if "grid" in paths:
        say(paths["grid"].read_text().rstrip())
    say("summary: " + ", ".join(str(p) for k, p in paths.items() if ":" not in k))
    report = [p for k, p in paths.items() if k.startswith("report:")]
    if report:
        say(f"report: {report[0].parent} ({len(report)} tables and pictures)")
    unfinished = [row for row in rows if row.status.startswith(("stopped at", "stopped by",
                                                                 "stopped before"))]  # fmt: skip
    if unfinished and not space.budget.time_budget:
        say(f"{len(unfinished)} trial(s) did not finish; continue with: {hint}")
        return 0
    mark_finished(path, {
        "finished_at": time.strftime("%Y-%m-%d %H:%M:%S"), "best_trial": best.trial_id,
        "best": f"val ppl {best.best_val_ppl:.2f}, test ppl {test} | {describe(best.params)}",
        "model": model_uri, "summary": str(paths["md"]), "trials": outcome_counts(rows),
    })  # fmt: skip
    return 0
