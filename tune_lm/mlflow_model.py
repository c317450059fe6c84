"""The best model of a search as an MLflow model (pyfunc), registered in the registry.

The model's files are a tune_lm checkpoint (state_dict + config + vocabulary, loadable
with ``torch.load(weights_only=True)``); the pyfunc wrapper scores text::

    model = mlflow.pyfunc.load_model("models:/tune_lm-quick/1")
    model.predict(["the cat sat on the mat"])  # one perplexity per text
    model.unwrap_python_model().perplexity(open("valid.txt").read())
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import torch

import tune_lm
from tune_lm import metrics as M
from tune_lm.checkpoint import load_model, save_model
from tune_lm.config import TrainConfig
from tune_lm.data import EOS, UNK, tokenize
from tune_lm.evaluate import EvalSplit, evaluate_loss
from tune_lm.model import RNNLanguageModel


class LanguageModelPyfunc(mlflow.pyfunc.PythonModel):
    """Perplexity of texts under a trained tune_lm model."""

    def load_context(self, context: Any) -> None:
        self.model, self.config, self.vocab = load_model(context.artifacts["checkpoint"])
        self.word_to_id = {word: index for index, word in enumerate(self.vocab)}

    def perplexity(self, text: str) -> float:
        """exp(mean NLL) over every token of ``text`` (lines + <eos>, as the corpora)."""
        unk = self.word_to_id.get(UNK)
        ids = [self.word_to_id.get(word, unk) for word in tokenize(text)]
        if any(i is None for i in ids):
            raise ValueError("the text has words outside the vocabulary and it has no <unk>")
        split = EvalSplit(
            torch.tensor(ids, dtype=torch.int64), self.config.eval_batch_size,
            self.word_to_id[EOS], torch.device("cpu"),
        )  # fmt: skip
        return M.perplexity(evaluate_loss(self.model, split, self.config.bptt))

    def predict(self, model_input: list[str], params: dict | None = None) -> list[float]:
        """One perplexity per text."""
        return [self.perplexity(str(text)) for text in model_input]


def registered_name(experiment: str) -> str:
    return "tune_lm-" + re.sub(r"[^A-Za-z0-9_.-]+", "-", experiment)


def log_best_model(
    run_id: str, experiment: str, config: TrainConfig, vocab: tuple[str, ...],
    model_state: dict[str, torch.Tensor], metrics: dict[str, float],
) -> str:  # fmt: skip
    """Log the model under the parent run and register it; returns the model URI."""
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = Path(folder) / "model.pt"
        model = RNNLanguageModel.from_config(config, len(vocab))
        save_model(checkpoint, model, config, vocab, metrics, model_state)
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name="best_model",
                python_model=str(Path(__file__).with_name("mlflow_model_code.py")),
                artifacts={"checkpoint": str(checkpoint)},
                registered_model_name=registered_name(experiment),
                pip_requirements=[
                    f"tune_lm=={tune_lm.__version__}",
                    f"torch=={torch.__version__.split('+')[0]}",
                ],  # fmt: skip
            )
    return info.model_uri


def load_for_inference(
    checkpoint: str | None = None, model_uri: str | None = None
) -> tuple[RNNLanguageModel, TrainConfig, list[str]]:
    """(model, config, vocab) from a checkpoint file or a registered MLflow model."""
    if checkpoint:
        return load_model(checkpoint)
    try:
        wrapper = mlflow.pyfunc.load_model(model_uri).unwrap_python_model()
    except Exception as error:  # unknown name/version, unreachable server, ...
        from tune_lm.errors import TuneLMError

        raise TuneLMError(f"--model {model_uri}: cannot load it from MLflow ({error})") from None
    return wrapper.model, wrapper.config, list(wrapper.vocab)
