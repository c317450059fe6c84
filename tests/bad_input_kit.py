"""Building blocks of the bad-input cases (tests/bad_input_*.py, run by
tests/test_bad_input.py): a case is a command line, the stderr it must print, and the
files written into its empty folder before it runs."""

from __future__ import annotations

import contextlib
import sqlite3
from dataclasses import dataclass, field

import torch

GOOD_SPACE = """\
data: synthetic
fixed: {epochs: 2, nlayers: 1, emsize: 16, nhid: 16, batch_size: 8, bptt: 10,
        max_tokens_per_epoch: 1600}
parameters:
  lr: {loguniform: [1.0, 20.0]}
"""
GRID_SPACE = """\
data: synthetic
searcher: {type: grid}
budget: {num_samples: 1}
scheduler: {type: fifo}
fixed: {epochs: 2, nlayers: 1, emsize: 16, nhid: 16, batch_size: 8, bptt: 10}
parameters:
  model: {grid: [LSTM, GRU]}
  lr: {grid: [1.0, 5.0]}
"""
GOOD_LINES = "the cat sat on the mat\nthe dog sat on the log\n" * 20
GOOD_CORPUS = {"train.txt": GOOD_LINES, "valid.txt": GOOD_LINES, "test.txt": GOOD_LINES}
MARKER = "pwned"  # a YAML tag that ran code would create this file
# "Billion laughs": 9**9 strings once expanded, from 400 bytes.
ALIAS_BOMB = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{new}: &{new} [{', '.join([f'*{old}'] * 9)}]\n"
    for old, new in zip("abcdefgh", "bcdefghi", strict=True)
)


def space_with(text: str) -> dict[str, str]:
    return {"space.yaml": text}


def corpus(**files: str | bytes | None) -> dict[str, str | bytes]:
    """Files of a folder ``corpus/``: the good ones, with ``files`` replaced (None = absent)."""
    merged = {**GOOD_CORPUS, **{f"{name}.txt": text for name, text in files.items()}}
    return {f"corpus/{name}": text for name, text in merged.items() if text is not None}


@dataclass
class Case:
    id: str
    cli: str  # "search" or "train"
    args: list[str]  # run in the case's folder; "{port}" is a port nothing listens on
    expected: tuple[str, ...]  # all in stderr
    files: dict[str, str | bytes] = field(default_factory=dict)  # written before the run
    marks: tuple = ()
    may_leave: tuple[str, ...] = ()  # path prefixes a failed run may leave (a valid cache)


def search(id, args, expected, files=None):
    files = {"space.yaml": GOOD_SPACE, **(files or {})}
    return Case(id, "search", ["--space", "space.yaml", *args], expected, files)


def bad_space(id, text, expected):
    return search(id, [], ("space.yaml", *expected), space_with(text))


def train(id, args, expected, files=None):
    return Case(id, "train", ["--smoke", *args], expected, files or {})


def torch_bytes(obj) -> bytes:
    import io

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def tiny_weights() -> dict:
    from tune_lm.lm.config import TrainConfig
    from tune_lm.lm.model import RNNLanguageModel

    config = TrainConfig(emsize=4, nhid=4, nlayers=1)
    return config, RNNLanguageModel.from_config(config, 12).state_dict()


TINY_CONFIG, TINY_WEIGHTS = tiny_weights()
MODEL_PT = torch_bytes({"format": "tune_lm.model/1", "config": TINY_CONFIG.to_dict(),
                         "vocab": [f"w{i}" for i in range(11)] + ["<eos>"],
                         "model_state": TINY_WEIGHTS, "metrics": {}})  # fmt: skip
# a trial's train_state.pt copied out of its experiment: no search.json above it
LONELY_STATE = torch_bytes({"format": "tune_lm.train_state/1", "config": TINY_CONFIG.to_dict(),
                             "model": TINY_WEIGHTS, "best_model": TINY_WEIGHTS})  # fmt: skip
SUMMARY = (
    '{"space": {"parameters": {"lr": {}}, "fixed": {"nhid": 16}}, "trials": '
    '[{"trial_id": "a", "lr": 2.0, "status": "completed", "best_val_ppl": 40.0}]}'
)


def generate(id, args, expected, files=None):
    return Case(id, "generate", args, expected, files or {})


def evaluate(id, args, expected, files=None):
    return Case(id, "evaluate", [*args, "--data", "synthetic"], expected, files or {})


def report(id, args, expected, files=None):
    return Case(id, "report", args, expected, files or {})


def sampling(flag, value):
    return generate(f"generate-{flag}-{value}", ["--checkpoint", "model.pt", f"--{flag}={value}"],
                    (f"--{flag}", "from"), {"model.pt": MODEL_PT})  # fmt: skip


def database_bytes() -> bytes:
    with contextlib.closing(sqlite3.connect(":memory:")) as db:
        db.execute("CREATE TABLE invoices (number INTEGER)")
        return db.serialize()


OTHER_DATABASE = database_bytes()  # another program's SQLite file named mlflow.db


def pinned_elsewhere(name: str, made_at: str, space_sha256: str = "") -> dict[str, str]:
    """An experiment's pinned files as a search made at ``made_at`` wrote them."""
    import json

    from tune_lm.tuning.experiment import SETTINGS_FORMAT
    from tune_lm.tuning.space import SearchSpace

    space = SearchSpace.model_validate({"name": name, "data": "synthetic",
                                        "parameters": {"lr": {"loguniform": [1.0, 20.0]}}})
    settings = {"format": SETTINGS_FORMAT, "data": "synthetic", "corpus_name": "synthetic",
                "fingerprint": "0" * 64, "ntokens": 50, "tracking_uri": "sqlite:///m.db",
                "log_checkpoints": "best", "progress_every": 30.0, "experiment": made_at,
                "space_sha256": space_sha256}
    return {f"tune_lm_runs/{name}/space.json": space.model_dump_json(),
            f"tune_lm_runs/{name}/search.json": json.dumps(settings)}


def tune_state_without_a_trial_folder(name: str) -> dict[str, str]:
    """A stopped experiment whose Tune state names a finished trial whose folder is gone
    (its store is there: an empty file, as a missing one is refused first)."""
    import json

    trial = {"trial_id": "0a1b2c3d", "status": "TERMINATED",
             "relative_logdir": "train_trial_0a1b2c3d_1_lr=2.0"}
    state = {"trial_data": [[json.dumps(trial), "{}"]], "runner_data": {}, "stats": {}}
    return {**pinned_elsewhere(name, ""), "m.db": "",
            f"tune_lm_runs/{name}/tuner.pkl": "state",
            f"tune_lm_runs/{name}/experiment_state-2026-11-29_10-00-00.json": json.dumps(state)}

