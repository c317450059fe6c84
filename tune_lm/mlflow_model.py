"""Where models registered before the layered layout look for their wrapper: the code
MLflow stored with them imports ``tune_lm.mlflow_model.LanguageModelPyfunc``. Kept so
those models still load; new code is in :mod:`tune_lm.tracking.registry`."""

from tune_lm.tracking.registry import LanguageModelPyfunc

__all__ = ["LanguageModelPyfunc"]
