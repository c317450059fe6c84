"""Checkpoints on disk: plain tensors and primitives, written atomically.

A model checkpoint is ``{"format", "config", "vocab", "model_state", "metrics"}``;
a training state (for resuming) is the dict of :meth:`tune_lm.train.TrainState.to_dict`.
Both load with ``torch.load(weights_only=True)``: nothing is unpickled but tensors,
strings, numbers, lists and dicts.
"""

from __future__ import annotations

import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from tune_lm.lm.atomic import atomic_file
from tune_lm.lm.config import TrainConfig
from tune_lm.lm.errors import TuneLMError
from tune_lm.lm.model import RNNLanguageModel
from tune_lm.lm.train_state import STATE_FORMAT

MODEL_FORMAT = "tune_lm.model/1"
STATE_FILE = "train_state.pt"  # a trial's checkpoint (see tune_lm.tuning.trainable)


def is_model_file(path: str | Path) -> bool:
    """Whether ``path`` is a checkpoint that :func:`save_model` wrote: its format tag is in
    the archive's pickle (read alone, small; the tensors are not loaded)."""
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [name for name in archive.namelist() if name.endswith("data.pkl")]
            return bool(pickles) and MODEL_FORMAT.encode() in archive.read(pickles[0])
    except (OSError, zipfile.BadZipFile):
        return False


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` written whole or not at all (see :func:`tune_lm.lm.atomic.atomic_file`)."""
    with atomic_file(path) as out:
        torch.save(obj, out)


def save_model(
    path: str | Path,
    model: RNNLanguageModel,
    config: TrainConfig,
    vocab: tuple[str, ...] | list[str],
    metrics: dict[str, float] | None = None,
    model_state: dict[str, torch.Tensor] | None = None,
) -> None:
    """Save weights (``model_state`` if given, else the model's), config and vocabulary."""
    state = model_state if model_state is not None else model.state_dict()
    atomic_torch_save(
        {
            "format": MODEL_FORMAT,
            "config": config.to_dict(),
            "vocab": list(vocab),
            "model_state": {name: tensor.detach().cpu() for name, tensor in state.items()},
            "metrics": dict(metrics or {}),
        },
        path,
    )


def load_model(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[RNNLanguageModel, TrainConfig, list[str]]:
    """Rebuild the model saved by :func:`save_model`; returns (model, config, vocab)."""
    saved = read_checkpoint(path)
    if saved.get("format") != MODEL_FORMAT:
        raise TuneLMError(f"{path} is not a tune_lm model checkpoint ({MODEL_FORMAT})")
    config = saved_config(saved, path)
    model = model_from_weights(config, saved.get("model_state"), path).to(device)
    return model, config, list(saved["vocab"])


def read_checkpoint(path: str | Path, flag: str = "--checkpoint") -> dict[str, Any]:
    """The dict in a tune_lm file: a model checkpoint or a trial's training state.

    Anything else (missing, a folder, truncated, a pickle of Python objects, another
    program's file) is a :class:`TuneLMError` naming ``path`` and what to give instead.
    """
    fix = (
        f"Give {flag} a model checkpoint (model.pt, written by python -m tune_lm.train "
        f"--save) or a trial's {STATE_FILE} (EXPERIMENT/TRIAL/checkpoint_N/{STATE_FILE})"
    )
    path = Path(path)
    if path.is_dir():
        inside = sorted(path.glob(f"checkpoint_*/{STATE_FILE}")) + sorted(
            path.glob(f"*{Path(STATE_FILE).suffix}")
        )  # a trial folder, a checkpoint_N folder, a folder of checkpoints
        hint = f" (it holds {inside[-1]}: give that file?)" if inside else ""
        raise TuneLMError(f"{flag} {path} is a folder, not a checkpoint file{hint}. {fix}")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of foreign files
            warnings.simplefilter("ignore")
            saved = torch.load(path, map_location="cpu", weights_only=True)
    except (FileNotFoundError, NotADirectoryError):
        raise TuneLMError(f"{flag} {path} does not exist. {fix}") from None
    except PermissionError as error:
        raise TuneLMError(f"{flag} {path} cannot be read ({error}). {fix}") from None
    except Exception as error:  # torch.save writes a zip archive: anything else is foreign
        if not zipfile.is_zipfile(path):
            what = "is not a torch checkpoint, or was cut off while being written or copied"
        elif isinstance(error, pickle.UnpicklingError):
            raise TuneLMError(
                f"{flag} {path} holds pickled Python objects, not only tensors, so it is "
                f"not a tune_lm file (tune_lm never writes such files, and loading them "
                f"could run code). {fix}"
            ) from None
        else:
            what = "is damaged"
        raise TuneLMError(
            f"{flag} {path} cannot be read: it {what} ({type(error).__name__}). Copy it "
            f"again whole, or, for a trial, take its previous checkpoint_N folder. {fix}"
        ) from None
    kinds = (MODEL_FORMAT, STATE_FORMAT)
    if not isinstance(saved, dict) or saved.get("format") not in kinds:
        raise TuneLMError(
            f"{flag} {path} is a torch file but not a tune_lm checkpoint (its format is "
            f"neither {MODEL_FORMAT} nor {STATE_FORMAT}). {fix}"
        )
    return saved


def saved_config(saved: dict[str, Any], path: str | Path) -> TrainConfig:
    """The TrainConfig stored in a checkpoint or training state."""
    if not isinstance(saved.get("config"), dict) or not saved["config"]:
        raise TuneLMError(f"{path} holds no training config; it was damaged or written by "
                          "another program. Use another checkpoint")  # fmt: skip
    return TrainConfig.from_dict(saved["config"], source=str(path))


def state_weights(saved: dict[str, Any]) -> dict[str, torch.Tensor] | None:
    """The weights of a training state: the best-validation ones when it has them."""
    best = saved.get("best_model")
    return best if best else saved.get("model")


def weights_vocab_size(weights: dict[str, torch.Tensor]) -> int | None:
    """How many words the weights were trained on (rows of the embedding)."""
    embedding = weights.get("encoder.weight") if isinstance(weights, dict) else None
    return int(embedding.shape[0]) if isinstance(embedding, torch.Tensor) else None


def model_from_weights(config: TrainConfig, weights: Any, path: str | Path) -> RNNLanguageModel:
    """``config``'s model with ``weights`` loaded; a mismatch names the file."""
    ntokens = weights_vocab_size(weights)
    if ntokens is None:
        raise TuneLMError(
            f"{path} holds no model weights (no encoder.weight); it was "
            "damaged or written by another program. Use another checkpoint"
        )
    try:
        model = RNNLanguageModel.from_config(config, ntokens)
        model.load_state_dict(weights)
    except (RuntimeError, ValueError) as error:
        first = str(error).strip().splitlines()[0]
        raise TuneLMError(
            f"{path}: its weights do not fit its own config ({first}); the "
            "file was damaged or edited. Use another checkpoint"
        ) from None
    return model
