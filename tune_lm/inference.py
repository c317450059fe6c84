"""What ``generate`` and ``evaluate`` load: a trained model, its config and vocabulary.

From any file a user has at hand:

- a model checkpoint (``model.pt`` from ``python -m tune_lm.train --save``, or a trial's
  ``checkpoints/best/model.pt`` artifact in MLflow): weights, config and vocabulary;
- a trial's own checkpoint (``EXPERIMENT/TRIAL/checkpoint_N/train_state.pt``): weights
  (the best-validation ones) and config, but no vocabulary. That is the corpus the
  experiment pinned in ``EXPERIMENT/search.json``, loaded again and checked against
  the fingerprint recorded there;
- a registered MLflow model (``models:/NAME/VERSION``), see :mod:`tune_lm.tracking.registry`.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch

from tune_lm.lm.checkpoint import (
    MODEL_FORMAT,
    STATE_FILE,
    model_from_weights,
    read_checkpoint,
    saved_config,
    state_weights,
)
from tune_lm.lm.config import TrainConfig
from tune_lm.lm.errors import ConfigError, TuneLMError
from tune_lm.lm.model import RNNLanguageModel
from tune_lm.tuning.experiment import SETTINGS_FORMAT
from tune_lm.tuning.layout import CONFIRM_FOLDER, SETTINGS_FILE, SPACE_FILE

log = logging.getLogger(__name__)

# EXPERIMENT/TRIAL/checkpoint_N/train_state.pt: the experiment is at most 3 folders up,
# 4 for a confirmation trial's (EXPERIMENT/confirm/TRIAL/checkpoint_N/train_state.pt).
_LEVELS_UP = 3


def add_model_flags(parser: argparse.ArgumentParser) -> None:
    """--checkpoint FILE | --model URI, and --tracking-uri for the latter (generate, evaluate)."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", metavar="FILE",
                        help="a model checkpoint (model.pt from tune_lm.train --save or MLflow) "
                        "or a trial's train_state.pt inside its experiment folder")  # fmt: skip
    source.add_argument("--model", metavar="URI", help="a registered MLflow model, "
                        "models:/NAME/VERSION (a search registers tune_lm-NAME)")  # fmt: skip
    source.add_argument("--smoke", action="store_true", help="instead: a tiny model trained "
                        "here in seconds on the synthetic corpus (checks the installation, "
                        "offline)")  # fmt: skip
    parser.add_argument("--tracking-uri", help="with --model: the MLflow store the search "
                        "logged to (default: MLFLOW_TRACKING_URI or ./mlflow.db)")  # fmt: skip


def check_model_flags(args: argparse.Namespace) -> None:
    if args.tracking_uri is not None and args.model is None:
        raise ConfigError("--tracking-uri applies to --model only (a --checkpoint is a file); "
                          "leave it out, or give --model models:/NAME/VERSION")  # fmt: skip


def load_for_inference(
    checkpoint: str | None = None, model_uri: str | None = None, tracking_uri: str | None = None,
    *, smoke: bool = False,
) -> tuple[RNNLanguageModel, TrainConfig, list[str]]:
    """(model, config, vocab) from a checkpoint file or a registered MLflow model (or,
    ``smoke``, a tiny model trained here on the synthetic corpus)."""
    if smoke:
        return smoke_model()
    if checkpoint is not None:
        loaded = load_checkpoint_file(checkpoint)
    else:
        from tune_lm.tracking.registry import load_registered

        loaded = load_registered(str(model_uri), tracking_uri)
    broken = [name for name, weights in loaded[0].named_parameters()
              if not bool(torch.isfinite(weights).all())]  # fmt: skip
    if broken:
        raise ConfigError(
            f"{f'--checkpoint {checkpoint}' if checkpoint is not None else f'--model {model_uri}'}"
            f": its weights hold NaN or infinite values ({', '.join(broken[:3])}"
            f"{', ...' if len(broken) > 3 else ''}): the training that saved them diverged. "
            "Use another checkpoint or model (a search keeps each trial's best-validation "
            "weights, which are finite)"
        )
    return loaded


def smoke_model() -> tuple[RNNLanguageModel, TrainConfig, list[str]]:
    """``train --smoke``'s model (seconds on a CPU), trained here: its best weights."""
    from tune_lm.lm.fit import fit
    from tune_lm.train import SMOKE_CONFIG

    config = TrainConfig.from_dict({**SMOKE_CONFIG, "device": "cpu"}, source="--smoke")
    result = fit(config)
    model = RNNLanguageModel.from_config(config, len(result.vocab))
    model.load_state_dict(result.best_model_state)
    return model, config, list(result.vocab)


def load_checkpoint_file(path: str | Path) -> tuple[RNNLanguageModel, TrainConfig, list[str]]:
    """A model checkpoint or a trial's training state, as (model, config, vocab)."""
    saved = read_checkpoint(path)
    config = saved_config(saved, path)
    if saved["format"] == MODEL_FORMAT:
        model = model_from_weights(config, saved.get("model_state"), path)
        vocab = saved.get("vocab")
        if not isinstance(vocab, list) or len(vocab) != model.ntokens:
            raise TuneLMError(
                f"--checkpoint {path}: its vocabulary does not match its "
                "weights; the file was damaged. Use another checkpoint"
            )
    else:  # a trial's training state: the vocabulary comes from its experiment
        model = model_from_weights(config, state_weights(saved), path)
        vocab = experiment_vocab(Path(path), model.ntokens, config)
    return model, config, list(vocab)


def experiment_vocab(path: Path, ntokens: int, config: TrainConfig) -> list[str]:
    """The vocabulary of the corpus the experiment holding trial state ``path`` trained on."""
    folders = list(path.resolve().parents)[:_LEVELS_UP + 1]
    if len(folders) > _LEVELS_UP and folders[_LEVELS_UP - 1].name != CONFIRM_FOLDER:
        folders.pop()  # only a confirmation trial's experiment is one more folder up
    for folder in folders:
        if (folder / SETTINGS_FILE).is_file():
            return _pinned_vocab(path, folder, ntokens)
        if (folder / SPACE_FILE).is_file():  # an experiment from before search.json
            return _unverified_vocab(path, folder, ntokens, config.data)
    raise TuneLMError(
        f"--checkpoint {path} is a trial's training state ({STATE_FILE}): it holds the "
        f"weights and the config but not the vocabulary, which comes from the corpus its "
        f"experiment pinned in {SETTINGS_FILE}, and none of {', '.join(map(str, folders))} "
        f"has one. Give the file where the search wrote it (EXPERIMENT/TRIAL/checkpoint_N/"
        f"{STATE_FILE}, with EXPERIMENT/{SETTINGS_FILE} beside its trial folders, or "
        f"EXPERIMENT/{CONFIRM_FOLDER}/TRIAL/... for a confirmation trial), or "
        f"{_USE_MODEL_CHECKPOINT}"
    )


def _pinned_vocab(path: Path, folder: Path, ntokens: int) -> list[str]:
    from tune_lm.lm.data import load_corpus

    settings_file = folder / SETTINGS_FILE
    try:
        settings = json.loads(settings_file.read_text(encoding="utf-8"))
        if settings.get("format") != SETTINGS_FORMAT:
            raise ValueError(f"not a {SETTINGS_FORMAT} file")
        data, fingerprint = str(settings["data"]), str(settings["fingerprint"])
    except (OSError, ValueError, KeyError, AttributeError) as error:
        raise TuneLMError(
            f"--checkpoint {path}: the experiment's {settings_file}, which names the corpus "
            f"(the vocabulary) of this trial, cannot be read ({error}); "
            f"{_USE_MODEL_CHECKPOINT}"
        ) from None
    problem = "cannot be loaded now"
    try:
        corpus = load_corpus(data)
    except TuneLMError as error:
        problem = f"cannot be loaded now ({error})"
        corpus = None
    if corpus is not None and corpus.fingerprint != fingerprint:
        problem = (
            f"has changed since the search (fingerprint {corpus.fingerprint[:12]} now, "
            f"{fingerprint[:12]} in {settings_file}), so its word ids may differ"
        )
        corpus = None
    if corpus is None:
        raise TuneLMError(
            f"--checkpoint {path}: the vocabulary of this trial is that of its experiment's "
            f"corpus {data!r} (named in {settings_file}), which {problem}. Restore that "
            f"corpus, or {_USE_MODEL_CHECKPOINT}"
        )
    _check_size(path, ntokens, corpus.ntokens, data, settings_file)
    return list(corpus.vocab)


def _unverified_vocab(path: Path, folder: Path, ntokens: int, data: str) -> list[str]:
    from tune_lm.lm.data import load_corpus

    try:
        corpus = load_corpus(data)
    except TuneLMError as error:
        raise TuneLMError(
            f"--checkpoint {path}: the vocabulary of this trial is that of the corpus it "
            f"trained on, {data!r} (its config), which cannot be loaded now ({error}). "
            f"Restore that corpus, or {_USE_MODEL_CHECKPOINT}"
        ) from None
    _check_size(path, ntokens, corpus.ntokens, data, folder / SPACE_FILE)
    log.warning("%s: experiment %s has no %s (it predates it): the corpus %r is assumed "
                "unchanged since the search", path, folder, SETTINGS_FILE, data)  # fmt: skip
    return list(corpus.vocab)


def _check_size(path: Path, ntokens: int, found: int, data: str, source: Path) -> None:
    if ntokens != found:
        raise TuneLMError(
            f"--checkpoint {path}: its weights have {ntokens} words but the corpus {data!r} "
            f"named by {source} has {found}, so this trial did not train on it (the file was "
            f"moved into another experiment?); {_USE_MODEL_CHECKPOINT}"
        )


_USE_MODEL_CHECKPOINT = (
    "use the trial's model checkpoint instead, which carries its vocabulary: the artifact "
    "checkpoints/best/model.pt of the trial's MLflow run (`mlflow artifacts download "
    "--run-id RUN_ID --artifact-path checkpoints/best/model.pt`), then --checkpoint model.pt"
)
