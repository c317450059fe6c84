"""What an experiment folder holds, by file name, defined once.

    tune_lm_runs/NAME/            one search (Ray Tune's experiment folder)
      space.json                  the validated space, as the experiment started with it
      search.json                 corpus fingerprint and MLflow settings it is pinned to
      optuna_study.journal        the Optuna study (journal storage)
      asha_stops.jsonl            ASHA's stop decisions, one JSON object a line
      search.log                  Ray's, MLflow's and Optuna's output (unless --verbose)
      summary.{csv,json,md}       every trial's row; grid_table.md for grid studies
      finished.json               written when the search has ended for good
      warm_start.json             --warm-start: the earlier search, what transferred
      report/                     tables and pictures (python -m tune_lm.report)
      train_trial_*/              Ray's trial folders (checkpoints, result.json)
"""

SPACE_FILE = "space.json"
SETTINGS_FILE = "search.json"
STUDY_FILE = "optuna_study.journal"
STUDY_NAME = "tune_lm"  # the Optuna study's name inside its journal
STOPS_FILE = "asha_stops.jsonl"
BRACKETS_FILE = "asha_brackets.jsonl"  # Hyperband: the bracket each trial was put in
LOG_FILE = "search.log"
SUMMARY_CSV = "summary.csv"
SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"
GRID_TABLE_MD = "grid_table.md"
FINISHED_FILE = "finished.json"
EXTENSIONS_FILE = "extensions.json"  # --extend: trials added to a finished search
CONFIRM_FOLDER = "confirm"  # the confirmation runs' Ray experiment, in the search's folder
CONFIRM_FILE = "confirm.json"  # the finalists and seeds, fixed when confirmation starts
DRIVER_LOCK = ".driver.lock"  # held (flock) by the one search driving the experiment
REPLAY_MARK = "replay.json"  # a rehearsal (--replay): nothing to resume or extend
WARM_START_FILE = "warm_start.json"  # --warm-start: where its trials came from, kept
# Ours, at the experiment's root, named as Tune's restore downloads every .json and .pkl
# there and uploads them all again at each snapshot (a stale copy, not written atomically:
# a kill mid-upload left search.json empty). private_api.fit_noting_interrupt keeps them out.
OURS_AT_THE_ROOT = (SPACE_FILE, SETTINGS_FILE, SUMMARY_JSON, FINISHED_FILE, EXTENSIONS_FILE,
                    CONFIRM_FILE, WARM_START_FILE)  # fmt: skip


MAX_NAME_BYTES = 255  # a folder name's limit on common file systems (ext4, APFS, NTFS)


def experiment_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name an experiment folder inside the storage (None: it can)."""
    if not name.strip() or name in (".", "..") or any(c in name for c in "/\\\0"):
        return "must be a plain name (no / or \\, not . or ..): it is a folder inside --storage"
    if any(not c.isprintable() for c in name):  # a newline or a tab: no command shows it
        return "must be printable: no newline, tab or other control character"
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        return (f"is {len(name.encode('utf-8'))} bytes long; a folder name may have at most "
                f"{MAX_NAME_BYTES}: give a shorter one")  # fmt: skip
    return None
