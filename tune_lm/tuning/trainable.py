"""The Ray Tune function trainable: Tune's config dict in, ``fit()`` run, metrics out.

This is the only module that talks to a Tune *trial* session (``tune.report``,
``tune.get_checkpoint``, ``tune.Checkpoint``: the Ray 2.60 API), so Ray's API churn
stays here. Every evaluation reports ``val_ppl`` and the other metrics of
:mod:`tune_lm.lm.metrics` with a checkpoint holding the whole training state, from which
the trial resumes exactly.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from tune_lm.lm import metrics as M
from tune_lm.lm.checkpoint import STATE_FILE, atomic_torch_save
from tune_lm.lm.config import TrainConfig
from tune_lm.lm.corpus import Corpus
from tune_lm.lm.device import resolve_device
from tune_lm.lm.evaluate import EvalSplit, evaluate_loss
from tune_lm.lm.fit import fit
from tune_lm.lm.model import RNNLanguageModel
from tune_lm.lm.train_state import TrainState, adopt
from tune_lm.tuning import faults, private_api
from tune_lm.tuning.disk_reserve import check_free_space
from tune_lm.tuning.heap import release_freed_memory
from tune_lm.tuning.space import SearchSpace

log = logging.getLogger(__name__)


def trial_resources(config: TrainConfig) -> TrainConfig:
    """Use exactly what Tune allotted: torch threads = the trial's CPUs, its GPU if any."""
    allotted = tune.get_context().get_trial_resources().required_resources
    threads = max(1, int(allotted.get("CPU", 1)))
    device = "cuda" if allotted.get("GPU", 0) > 0 else "cpu"
    return config.replace(threads=threads, device=device)


def load_state(checkpoint: tune.Checkpoint) -> dict[str, Any]:
    with checkpoint.as_directory() as folder:
        return torch.load(Path(folder) / STATE_FILE, weights_only=True, map_location="cpu")


def load_latest_readable(checkpoint: tune.Checkpoint) -> dict[str, Any] | None:
    """The training state of ``checkpoint``, or, if it cannot be read (truncated,
    corrupted), of the newest older checkpoint of the same trial that can."""
    import pyarrow.fs

    candidates = [checkpoint]
    parent = checkpoint.path.rstrip("/").rsplit("/", 1)[0]
    try:
        found = checkpoint.filesystem.get_file_info(pyarrow.fs.FileSelector(parent))
        latest = checkpoint.path.rstrip("/").rsplit("/", 1)[-1]
        older = sorted(
            (i.path for i in found if i.type == pyarrow.fs.FileType.Directory
             and i.base_name.startswith("checkpoint_") and i.base_name < latest),
            reverse=True,
        )  # fmt: skip
        candidates += [tune.Checkpoint(path, filesystem=checkpoint.filesystem) for path in older]
    except OSError as error:
        log.warning("cannot list the older checkpoints beside %s: %s", checkpoint.path, error)
    for candidate in candidates:
        try:
            state = load_state(candidate)
        except Exception as error:  # a half-written or damaged file: try the one before
            log.error("checkpoint %s cannot be read (%s); trying the previous one",
                      candidate.path, error)  # fmt: skip
            continue
        if candidate is not checkpoint:
            log.warning("resuming from %s instead of the unreadable %s", candidate.path,
                        checkpoint.path)  # fmt: skip
        return state
    log.error("no readable checkpoint for this trial: it starts from scratch")
    return None


def test_perplexity(
    config: TrainConfig, corpus: Corpus, model_state: dict[str, torch.Tensor]
) -> float:
    """Test perplexity of ``model_state`` (every test token scored once)."""
    device = resolve_device(config.device)
    model = RNNLanguageModel.from_config(config, corpus.ntokens).to(device)
    model.load_state_dict(model_state)
    split = EvalSplit(corpus.test, config.eval_batch_size, corpus.vocab.index("<eos>"), device)
    return M.perplexity(evaluate_loss(model, split, config.bptt))


def where_am_i() -> dict[str, str]:
    """The node and GPUs this trial runs on (strings: recorded, never optimised)."""
    context = ray.get_runtime_context()
    return {
        "node_id": context.get_node_id(),
        "node_ip": ray.util.get_node_ip_address(),
        "gpu_ids": ",".join(str(gpu) for gpu in ray.get_gpu_ids()) or "none",
    }


def train_trial(sampled: dict[str, Any], *, space: SearchSpace, corpus: Corpus) -> None:
    """Tune entry point. ``space`` and ``corpus`` come once per search through
    ``tune.with_parameters`` (the corpus sits in Ray's object store, not re-read)."""
    config = trial_resources(space.trial_config(sampled))
    release_freed_memory()  # what the previous trial of this (reused) process freed
    checkpoint = tune.get_checkpoint()
    state = load_latest_readable(checkpoint) if checkpoint is not None else None
    if state is not None and space.scheduler.type == "pbt":
        # PBT restarts a trial from another's checkpoint with perturbed lr / dropout.
        state = adopt(TrainState.from_dict(state), config)
    trial_id = tune.get_context().get_trial_id()
    trial_dir = private_api.local_trial_folder()  # None: remote storage
    test_epochs = set(space.test_at_epochs)
    placement = where_am_i()

    def report(epoch: float, result: dict[str, float], train_state: TrainState) -> None:
        faults.before_report(epoch, sampled, trial_id)
        metrics = {**result, **placement}
        if epoch in test_epochs and train_state.best_model is not None:
            # Grid studies report every configuration, each on its own best weights so far.
            metrics[M.test_at_epoch(int(epoch))] = test_perplexity(
                config, corpus, train_state.best_model
            )
        with tempfile.TemporaryDirectory() as folder:
            saved = Path(folder) / STATE_FILE
            atomic_torch_save(train_state.to_dict(), saved)
            if trial_dir is not None:  # local storage: check its disk
                check_free_space(trial_dir, saved.stat().st_size)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))
        faults.after_report(epoch, sampled, trial_id, train_state.model)

    fit(config, corpus=corpus, on_epoch_end=report, state=state, evaluate_test=False)
