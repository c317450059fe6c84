"""The best model of a search as an MLflow model (pyfunc), registered in the registry.

The model's files are a tune_lm checkpoint (state_dict + config + vocabulary, loadable
with ``torch.load(weights_only=True)``); the pyfunc wrapper scores text::

    model = mlflow.pyfunc.load_model("models:/tune_lm-quick/1")
    model.predict(["the cat sat on the mat"])  # one perplexity per text
    model.unwrap_python_model().perplexity(open("valid.txt").read())
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import torch

import tune_lm
from tune_lm.lm import metrics as M
from tune_lm.lm.checkpoint import load_model, save_model
from tune_lm.lm.config import TrainConfig
from tune_lm.lm.corpus import EOS, UNK, tokenize
from tune_lm.lm.errors import TuneLMError
from tune_lm.lm.evaluate import EvalSplit, evaluate_loss
from tune_lm.lm.model import RNNLanguageModel


class LanguageModelPyfunc(mlflow.pyfunc.PythonModel):
    """Perplexity of texts under a trained tune_lm model."""

    def load_context(self, context: Any) -> None:
        self.model, self.config, self.vocab = load_model(context.artifacts["checkpoint"])
        self.word_to_id = {word: index for index, word in enumerate(self.vocab)}

    def perplexity(self, text: str) -> float:
        """exp(mean NLL) over every token of ``text`` (lines + <eos>, as the corpora).

        The text is read as one stream from a zero state, as a reader would: one column,
        not ``eval_batch_size`` columns each restarted from zero, so the answer does not
        depend on that training setting."""
        unk = self.word_to_id.get(UNK)
        tokens = tokenize(text)
        ids = [self.word_to_id.get(word, unk) for word in tokens]
        unknown = [word for word, i in zip(tokens, ids, strict=True) if i is None]
        if unknown:
            shown = ", ".join(dict.fromkeys(unknown[:5]))
            raise ValueError(f"words outside the model's vocabulary ({shown}"
                             f"{', ...' if len(set(unknown)) > 5 else ''}), and it has no "
                             f"{UNK} to score them as")  # fmt: skip
        if all(word == EOS for word in tokens):
            return float("nan")  # no words to score: empty, or only blank lines
        split = EvalSplit(
            torch.tensor(ids, dtype=torch.int64), 1, self.word_to_id[EOS], torch.device("cpu")
        )  # (tokens, 1): a single stream
        return M.perplexity(evaluate_loss(self.model, split, self.config.bptt))

    def predict(self, model_input: list[str], params: dict | None = None) -> list[float]:
        """One perplexity per text (NaN for a text without words)."""
        scores = []
        for index, text in enumerate(model_input):
            try:
                scores.append(self.perplexity(str(text)))
            except ValueError as error:
                raise ValueError(f"text {index} of {len(model_input)}: {error}") from None
        return scores


def registered_name(experiment: str) -> str:
    """The registered model's name: ``tune_lm-`` and the experiment's name, kept to the
    characters every MLflow store accepts. A name that loses characters so (another
    script, spaces) gets a short hash of the original, so that two experiments never
    share one registered model (实验一 and 实验二 would both become ``tune_lm--``)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", experiment)
    if safe == experiment:
        return f"tune_lm-{safe}"
    digest = hashlib.sha256(experiment.encode("utf-8")).hexdigest()[:8]
    return f"tune_lm-{safe.strip('-') or 'experiment'}-{digest}"


def log_best_model(
    run_id: str, experiment: str, config: TrainConfig, vocab: tuple[str, ...],
    model_state: dict[str, torch.Tensor], metrics: dict[str, float], description: str,
) -> str:  # fmt: skip
    """Log the model into the run of the trial that trained it (``run_id``), register it
    as a new version of ``tune_lm-EXPERIMENT`` with ``description`` and ``metrics``
    (also as the version's tags), and return its ``models:/NAME/VERSION`` URI."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    status = client.get_run(run_id).info.status  # start_run would leave it FINISHED
    name = registered_name(experiment)
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = Path(folder) / "model.pt"
        model = RNNLanguageModel.from_config(config, len(vocab))
        save_model(checkpoint, model, config, vocab, metrics, model_state)
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name="best_model",
                python_model=str(Path(__file__).with_name("model_code.py")),
                artifacts={"checkpoint": str(checkpoint)},
                registered_model_name=name,
                pip_requirements=[
                    f"tune_lm=={tune_lm.__version__}",
                    f"torch=={torch.__version__.split('+')[0]}",
                ],  # fmt: skip
            )
            finite = {k: v for k, v in metrics.items() if v is not None}
            mlflow.log_metrics(finite, model_id=info.model_id)  # shown with the model
    client.set_terminated(run_id, status)
    version = str(info.registered_model_version)
    client.update_model_version(name, version, description=description)
    for key, value in {**metrics, "experiment": experiment}.items():
        shown = f"{value:.2f}" if isinstance(value, float) else str(value)
        client.set_model_version_tag(name, version, key, shown)
    return f"models:/{name}/{version}"


def load_registered(
    model_uri: str, tracking_uri: str | None = None
) -> tuple[RNNLanguageModel, TrainConfig, list[str]]:
    """(model, config, vocab) of a logged or registered MLflow model.

    Read-only: a ``models:/`` or ``runs:/`` URI is looked up in a store that must exist
    already (MLflow would create an empty ``./mlflow.db`` merely by being asked), and an
    unknown name or version is refused with the ones that exist.
    """
    from tune_lm.tracking.store import (
        check_store_exists,
        connect_uri,
        default_tracking_uri,
        move_credentials,
    )

    if not model_uri.strip():
        raise TuneLMError("--model '' is empty: give models:/NAME/VERSION (a search prints its "
                          "best model's), runs:/RUN_ID/model, or a checkpoint file with "
                          "--checkpoint")  # fmt: skip
    if model_uri.startswith(("models:/", "runs:/")):
        tracking_uri = move_credentials(tracking_uri or default_tracking_uri())
        registry_uri = move_credentials(os.environ.get("MLFLOW_REGISTRY_URI") or tracking_uri)
        check_store_exists(tracking_uri, f"--model {model_uri}")
        if registry_uri != tracking_uri:
            check_store_exists(registry_uri, f"--model {model_uri} (MLFLOW_REGISTRY_URI)")
        mlflow.set_tracking_uri(connect_uri(tracking_uri))  # the password back, if any
        mlflow.set_registry_uri(connect_uri(registry_uri))
        if model_uri.startswith("models:/"):
            _check_registered(model_uri, registry_uri)
    elif Path(model_uri).is_file():
        raise TuneLMError(
            f"--model {model_uri} is a file; give a checkpoint file with "
            f"--checkpoint {model_uri}, or a model URI (models:/NAME/VERSION)"
        )
    elif Path(model_uri).is_dir() and not (Path(model_uri) / "MLmodel").is_file():
        raise TuneLMError(
            f"--model {model_uri} is a folder but not an MLflow model (it has no MLmodel "
            "file): for a search's experiment folder, give the model the search registered, "
            "models:/tune_lm-NAME/VERSION (its last lines name it), or a checkpoint file with "
            "--checkpoint"
        )
    elif ":" not in model_uri and not Path(model_uri).exists():  # a bare name, say
        raise TuneLMError(
            f"--model {model_uri} is neither a model URI nor a folder: give "
            f"models:/{model_uri}/VERSION for a registered model (or models:/NAME/latest), "
            "runs:/RUN_ID/model for a logged one, or a checkpoint file with --checkpoint"
        )
    try:
        wrapper = mlflow.pyfunc.load_model(model_uri).unwrap_python_model()
    except Exception as error:  # unreachable server, a model of another program, ...
        first = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        raise TuneLMError(f"--model {model_uri}: cannot load it from MLflow ({first})") from None
    if not isinstance(wrapper, LanguageModelPyfunc):
        raise TuneLMError(
            f"--model {model_uri} is not a tune_lm model (it wraps "
            f"{type(wrapper).__name__}); give a models:/tune_lm-NAME/VERSION"
        )
    return wrapper.model, wrapper.config, list(wrapper.vocab)


def _check_registered(model_uri: str, registry_uri: str) -> None:
    """The registered model and its version (or alias) exist, else what does."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    rest = model_uri.removeprefix("models:/").strip("/")
    name, _, version = rest.partition("/")
    name, _, alias = name.partition("@")
    from tune_lm.tracking.store import connect_uri

    client = MlflowClient(registry_uri=connect_uri(registry_uri))
    where = f"the MLflow registry at {registry_uri}"
    try:
        client.get_registered_model(name)
    except MlflowException:
        names = [m.name for m in client.search_registered_models(max_results=50)]
        raise TuneLMError(
            f"--model {model_uri}: {where} has no registered model {name!r}; it has "
            f"{', '.join(names) or 'none'} (a search registers its best model as "
            f"tune_lm-NAME). Give --model models:/MODEL/VERSION, and --tracking-uri (or "
            f"MLFLOW_TRACKING_URI) for the store the search logged to"
        ) from None
    if not version and not alias:
        raise TuneLMError(f"--model {model_uri} names no version: give models:/{name}/VERSION, "
                          f"models:/{name}/latest or models:/{name}@ALIAS")  # fmt: skip
    if not version.isdigit() and not alias:
        return  # a stage or "latest": MLflow resolves it
    try:
        if alias:
            client.get_model_version_by_alias(name, alias)
        else:
            client.get_model_version(name, version)
    except MlflowException:
        versions = sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
        raise TuneLMError(
            f"--model {model_uri}: registered model {name!r} in {where} has no "
            f"{'alias ' + repr(alias) if alias else 'version ' + version}; its versions are "
            f"{', '.join(map(str, versions)) or 'none'}. Give models:/{name}/VERSION"
        ) from None
