"""MLflow "model from code" entry: MLflow runs this file to rebuild the pyfunc wrapper,
so the logged model holds no pickled Python object (see tune_lm.tracking.registry)."""

import mlflow

from tune_lm.tracking.registry import LanguageModelPyfunc

mlflow.models.set_model(LanguageModelPyfunc())
