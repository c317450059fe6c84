"""The MLflow tag names tune_lm sets, defined once: how runs are found again (a resumed
search logs into the same runs) and how MLflow's UI nests and describes them."""

TAG_KIND = "tune_lm.kind"  # "search" (parent), "trial" or "confirmation" (children)
TAG_PATH = "tune_lm.experiment_path"
TAG_TRIAL = "tune_lm.trial_id"
TAG_STATUS = "tune_lm.status"
TAG_FINALIST = "tune_lm.finalist"  # a confirmation run: the search trial it trains again
PARENT_TAG = "mlflow.parentRunId"  # what makes the UI nest a run under another
NOTE_TAG = "mlflow.note.content"  # what MLflow's UI shows as a run's description
