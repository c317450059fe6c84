"""MLflow "model from code" entry: MLflow runs this file to rebuild the pyfunc wrapper,
so the logged model holds no pickled Python object (see tune_lm.mlflow_model)."""

import mlflow

from tune_lm.mlflow_model import LanguageModelPyfunc

mlflow.models.set_model(LanguageModelPyfunc())
