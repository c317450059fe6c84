"""tune_lm: tune word-level recurrent language models with Ray Tune, Optuna and MLflow."""

__version__ = "0.1.0"
