"""Bad input to both CLIs: exit 2, one message naming the file/field/flag, no traceback,
and nothing left behind (no tune_lm_runs/, no mlflow.db, no cache, no model.pt).

Every case is a real subprocess started in an empty folder, with the caches, the data
folder and even $HOME pointed inside that folder, so anything written shows up. Each one
fails during validation, before Ray or MLflow start.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import shutil
import socket
import sqlite3
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from cli_run import run_cli

# Every test here runs a command in a subprocess (seconds each): not in the fast tier.
pytestmark = pytest.mark.slow

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


CASES = [
    # --- search: the space file ---
    bad_space("yaml-syntax", "parameters: {lr: [1, 2\n", ["not valid YAML"]),
    bad_space("yaml-tab-indent", "fixed:\n\temsize: 16\n", ["not valid YAML"]),
    bad_space("yaml-list", "- lr\n- emsize\n", ["top level must be a mapping"]),
    bad_space("yaml-scalar", "just words\n", ["top level must be a mapping"]),
    bad_space(
        "yaml-python-tag",
        f'!!python/object/apply:os.system ["touch {MARKER}"]\n',
        ["not valid YAML", "python/object/apply"],
    ),
    bad_space(
        "yaml-python-tag-nested",
        GOOD_SPACE + f"name: !!python/object/apply:os.system ['touch {MARKER}']\n",
        ["not valid YAML"],
    ),
    bad_space("yaml-bad-date", "name: 2020-13-45\n", ["not valid YAML", "month"]),
    bad_space("yaml-too-deep", "[" * 3000 + "]" * 3000, ["nested too deeply"]),
    bad_space(
        "yaml-duplicate-key",
        "parameters:\n  lr: {uniform: [1, 2]}\n  lr: {uniform: [1, 3]}\n",
        ["'parameters.lr' appears twice", "line 2 and line 3"],
    ),
    bad_space("yaml-duplicate-top-key", GOOD_SPACE + "data: ptb\n", ["'data' appears twice"]),
    bad_space(
        "yaml-duplicate-flow-key", "fixed: {epochs: 2, epochs: 3}\n", ["'fixed.epochs' appears"]
    ),
    bad_space(
        "yaml-duplicate-deep-key",
        "parameters: {model: {choice: [LSTM], choice: [GRU]}}\n",
        ["'parameters.model.choice' appears twice"],
    ),
    bad_space("yaml-alias-bomb", ALIAS_BOMB, ["aliases", "100,000"]),
    bad_space("yaml-alias-cycle", "parameters: &p {lr: *p}\n", ["aliases"]),
    bad_space("yaml-too-large", "# " + "x" * 70_000 + "\n", ["larger than 64 KiB"]),
    bad_space("empty-file", "", ["empty"]),
    bad_space("empty-comments-only", "# nothing yet\n\n", ["empty"]),
    bad_space("empty-mapping", "{}\n", ["empty"]),
    bad_space("empty-null", "null\n", ["empty"]),
    bad_space(
        "choice-repeated-value",
        "parameters: {model: {choice: [LSTM, GRU, LSTM]}}\n",
        ["parameters.model", "lists 'LSTM' twice"],
    ),
    bad_space("space-data-unknown", GOOD_SPACE.replace("data: synthetic", "data: nowhere"),
              ["field 'data' 'nowhere'", "neither a known corpus"]),  # fmt: skip
    bad_space("boolean-as-number", GOOD_SPACE.replace("epochs: 2", "epochs: true"),
              ["field 'epochs'", "not true/false"]),  # fmt: skip
    bad_space("quoted-number", "budget: {num_samples: '3'}\n" + GOOD_SPACE,
              ["field 'budget.num_samples'", "without quotes"]),  # fmt: skip
    bad_space(
        "q-step-wider-than-range",
        "parameters: {bptt: {qint: [10, 20, 50]}}\n",
        ["parameters.bptt", "at most one value"],
    ),
    bad_space(
        "grid-repeated-value",
        "searcher: {type: grid}\nparameters: {bptt: {grid: [10, 20, 10]}}\n",
        ["parameters.bptt", "lists 10 twice"],
    ),
    bad_space(
        "float-range-int-option",
        "parameters: {nhid: {uniform: [16, 64]}}\n",
        ["parameters.nhid", "whole number", "{int: [16, 64]}"],
    ),
    bad_space(
        "log-float-range-int-option",
        "parameters: {batch_size: {loguniform: [4, 64]}}\n",
        ["parameters.batch_size", "logint"],
    ),
    bad_space(
        "q-float-range-int-option",
        "parameters: {bptt: {quniform: [10, 40, 5]}}\n",
        ["parameters.bptt", "qint"],
    ),  # fmt: skip
    bad_space(
        "float-bounds-int-kind",
        "parameters: {emsize: {int: [8.0, 32]}}\n",
        ["parameters.emsize", "whole numbers"],
    ),  # fmt: skip
    bad_space(
        "range-over-a-choice-option",
        "parameters: {optimizer: {uniform: [0, 1]}}\n",
        ["parameters.optimizer", "choice: [sgd, adamw]"],
    ),  # fmt: skip
    bad_space(
        "reduction-factor-near-one",
        "scheduler: {reduction_factor: 1.001}\n",
        ["scheduler.reduction_factor", "at least 2", "rungs"],
    ),  # fmt: skip
    bad_space(
        "derived-cycle",
        "derived: {nhid: emsize, emsize: nhid}\n",
        ["derived", "nhid -> emsize -> nhid"],
    ),  # fmt: skip
    bad_space("derived-self", "derived: {emsize: emsize}\n", ["emsize -> emsize"]),
    bad_space(
        "ignored-startup-trials",
        "searcher: {sampler: random, n_startup_trials: 3}\n",
        ["searcher.n_startup_trials", "no effect"],
    ),  # fmt: skip
    bad_space(
        "ignored-grid-sampler",
        GRID_SPACE.replace("{type: grid}", "{type: grid, sampler: tpe}"),
        ["searcher.sampler", "no effect"],
    ),  # fmt: skip
    bad_space(
        "ignored-fifo-reduction",
        "scheduler: {type: fifo, reduction_factor: 3}\n",
        ["scheduler.reduction_factor", "no effect"],
    ),  # fmt: skip
    bad_space("nothing-searched", "data: synthetic\nfixed: {epochs: 2}\n", ["'parameters'"]),
    bad_space(
        "grid-too-large",
        GRID_SPACE.replace("[1.0, 5.0]", str([float(n) for n in range(1, 600)])),
        ["1,198 trials", "allow_large_grid"],
    ),
    search(
        "grid-too-large-by-flag",
        ["--num-samples", "300"],
        ("--num-samples 300", "1,200 trials", "allow_large_grid"),
        space_with(GRID_SPACE),
    ),  # fmt: skip
    bad_space("misspelled-section", "shceduler: {type: fifo}\n", ["Did you mean 'scheduler'"]),
    bad_space("misspelled-budget-key", "budget: {num_sample: 4}\n", ["Did you mean 'num_samples'"]),
    bad_space("misspelled-fixed", "fixed: {nhidd: 16}\n", ["fixed.nhidd", "Did you mean 'nhid'"]),
    bad_space("wrong-type-budget", "budget: {num_samples: many}\n", ["budget.num_samples"]),
    bad_space("wrong-type-fixed", "fixed: {emsize: big}\n", ["emsize", "big"]),
    bad_space("wrong-type-section", "parameters: [lr, emsize]\n", ["parameters"]),
    bad_space("wrong-type-seed", "seed: [1, 2]\n", ["seed"]),
    bad_space("empty-choices", "parameters: {model: {choice: []}}\n", ["parameters.model"]),
    bad_space("inverted-range", "parameters: {lr: {uniform: [5, 1]}}\n", ["parameters.lr", "low"]),
    bad_space("empty-range", "parameters: {nlayers: {int: [3, 3]}}\n", ["parameters.nlayers"]),
    bad_space("log-range-zero", "parameters: {lr: {loguniform: [0, 1]}}\n", ["low > 0"]),
    bad_space("log-range-negative", "parameters: {nhid: {logint: [-8, 64]}}\n", ["low > 0"]),
    bad_space(
        "tied-sizes", "fixed: {tied: true, emsize: 16, nhid: 32}\n", ["tied", "nhid == emsize"]
    ),
    bad_space("infinite-value", "fixed: {lr: .inf}\n", ["field 'lr'", "finite"]),
    bad_space("graph-adaptive", "fixed: {cuda_graph: true, decoder: adaptive}\n",
              ["cuda_graph=True needs decoder='full'"]),  # fmt: skip
    bad_space("no-objectives", "objectives: []\n", ["objectives"]),
    bad_space("dropout-one", "fixed: {dropout: 1.0}\n", ["dropout"]),
    bad_space("negative-bptt", "parameters: {bptt: {choice: [-5, 10]}}\n", ["bptt"]),
    # --- search: the corpus ---
    search("data-missing-folder", ["--data", "nowhere"], ("nowhere",)),
    search("data-no-valid", ["--data", "corpus"], ("valid.txt",), corpus(valid=None)),
    search("data-empty-train", ["--data", "corpus"], ("train.txt is empty",), corpus(train="")),
    search(
        "data-not-utf8",
        ["--data", "corpus"],
        ("valid.txt", "line 2", "UTF-8"),
        corpus(valid=b"fine\n\xff\xfe broken\n"),
    ),
    search(
        "data-blank-train",
        ["--data", "corpus"],
        ("train.txt has no words",),
        corpus(train="\n\n\n"),
    ),  # fmt: skip
    search(
        "data-whitespace-valid",
        ["--data", "corpus"],
        ("valid.txt has no words",),
        corpus(valid=" \t \n\u00a0\n"),
    ),  # fmt: skip
    search(
        "data-nul-byte",
        ["--data", "corpus"],
        ("test.txt", "line 2", "NUL byte"),
        corpus(test=b"the cat\nsat\x00 on\n"),
    ),  # fmt: skip
    search(
        "data-utf16",
        ["--data", "corpus"],
        ("train.txt", "NUL byte", "UTF-16"),
        corpus(train=GOOD_LINES.encode("utf-16")),
    ),  # fmt: skip
    # --- search: servers and the experiment ---
    search(
        "tracking-unreachable",
        ["--tracking-uri", "http://127.0.0.1:{port}"],
        ("--tracking-uri", "does not answer"),
    ),
    search("ray-address-unreachable", ["--address", "127.0.0.1:{port}"], ("--address",)),
    search("ray-client-unreachable", ["--address", "ray://127.0.0.1:{port}"], ("--address",)),
    search("ray-address-malformed", ["--address", "head-node"], ("--address", "head-node")),
    search(
        "grid-warning-then-bad-tracking",  # the warning comes first, once, then the error
        ["--num-samples", "50", "--tracking-uri", "http://127.0.0.1:{port}"],
        ("WARNING", "the grid runs 200 trials", "--tracking-uri"),
        space_with(GRID_SPACE),
    ),
    search("resume-missing", ["--name", "never", "--resume"], ("--resume", "never")),
    search(
        "name-taken",
        ["--storage", "runs", "--name", "taken"],
        ("exists already", "--name"),
        {"runs/taken/tuner.pkl": ""},
    ),
    # --- search: flags ---
    Case(
        "gpus-without-gpu",
        "search",
        ["--space", "space.yaml", "--gpus-per-trial", "1"],
        ("--gpus-per-trial", "no CUDA GPU"),
        {"space.yaml": GOOD_SPACE},
        marks=(pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU"),),
    ),
    search("negative-cpus", ["--cpus-per-trial", "-1"], ("--cpus-per-trial",)),
    search("zero-samples", ["--num-samples", "0"], ("--num-samples",)),
    search("zero-epochs", ["--max-epochs", "0"], ("--max-epochs",)),
    search("bad-time-budget", ["--time-budget", "ten minutes"], ("--time-budget", "ten minutes")),
    search("blank-time-budget", ["--time-budget", " " * 2000 + "x"], ("--time-budget",)),
    search("unknown-flag", ["--num-sample", "3"], ("unrecognized arguments: --num-sample",)),
    search("bad-choice-flag", ["--log-checkpoints", "some"], ("--log-checkpoints",)),
    search("missing-space", ["--space", "nope.yaml"], ("nope.yaml", "not found")),
    Case("space-is-a-folder", "search", ["--space", "folder.yaml"],
         ("folder.yaml", "is not a file"), {"folder.yaml/space.yaml": GOOD_SPACE}),  # fmt: skip
    # --- train ---
    train("train-zero-epochs", ["--epochs", "0"], ("--epochs",)),
    train("train-save-over-a-corpus-file", ["--data", "corpus", "--save", "corpus/train.txt"],
          ("--save corpus/train.txt", "not a model checkpoint"),
          {f"corpus/{name}": text for name, text in GOOD_CORPUS.items()}),  # fmt: skip
    train("train-save-over-notes", ["--save", "notes.txt"], ("--save notes.txt", "overwritten"),
          {"notes.txt": "my notes\n"}),  # fmt: skip
    train("train-metrics-over-a-model", ["--metrics-json", "weights.pt"],
          ("--metrics-json weights.pt", "not a metrics file"), {"weights.pt": b"PK\x03\x04"}),
    train("train-save-is-metrics", ["--save", "out.json", "--metrics-json", "./out.json"],
          ("same file",)),
    train("train-negative-lr", ["--lr", "-1"], ("--lr",)),
    train("train-bad-decoder", ["--decoder", "foo"], ("--decoder", "invalid choice")),
    train("train-infinite-lr", ["--lr", "inf"], ("--lr", "finite")),
    train("train-negative-bptt", ["--bptt", "-5"], ("--bptt",)),
    train("train-dropout-one", ["--dropout", "1"], ("--dropout",)),
    train("train-tied-sizes", ["--emsize", "16", "--nhid", "8", "--tied"], ("nhid == emsize",)),
    train("train-tied-adaptive", ["--tied", "--decoder", "adaptive"], ("decoder='full'",)),
    train("train-graph-adaptive", ["--cuda-graph", "--decoder", "adaptive"],
          ("cuda_graph=True needs decoder='full'",)),  # fmt: skip
    train("train-bad-cutoffs", ["--adaptive-cutoffs", "50", "10"], ("adaptive_cutoffs",)),
    train("train-not-an-int", ["--batch-size", "ten"], ("--batch-size", "invalid int")),
    train("train-bad-device", ["--device", "gpu"], ("device",)),
    train("train-unknown-flag", ["--learning-rate", "1"], ("--learning-rate",)),
    train("train-data-missing-folder", ["--data", "nowhere"], ("nowhere",)),
    train("train-data-no-valid", ["--data", "corpus"], ("valid.txt",), corpus(valid=None)),
    train(
        "train-data-empty-train", ["--data", "corpus"], ("train.txt is empty",), corpus(train="")
    ),  # fmt: skip
    train(
        "train-data-blank-test",
        ["--data", "corpus"],
        ("test.txt has no words",),
        corpus(test="\n \n"),
    ),  # fmt: skip
    train(
        "train-data-nul-byte",
        ["--data", "corpus"],
        ("valid.txt", "NUL byte"),
        corpus(valid=b"\x00"),
    ),  # fmt: skip
    train(
        "train-data-not-utf8",
        ["--data", "corpus"],
        ("train.txt", "line 1", "UTF-8"),
        corpus(train=b"caf\xe9 au lait\n"),
    ),
]


CASES += [  # issue 13: budgets Ray would misread, resources no node has
    search("time-budget-zero", ["--time-budget", "0s"], ("--time-budget", "more than 0")),
    search("time-budget-ambiguous", ["--time-budget", "2h30"], ("--time-budget", "ambiguous")),
    # A value beginning with a dash is the flag's value (argparse said "expected one
    # argument"), so the flag's own check names what is wrong with it.
    search("time-budget-negative", ["--time-budget", "-5m"], ("--time-budget", "-5m")),
    train("device-dash", ["--device", "-cuda"], ("--device", "-cuda", "cuda:N")),
    bad_space("space-time-budget-zero", "budget: {time_budget: 0m}\n", ["more than 0"]),
    search("address-is-the-dashboard", ["--address", "http://127.0.0.1:8265"],
           ("--address http://127.0.0.1:8265", "dashboard", "host:6379")),
    search("cpus-beyond-any-node", ["--cpus-per-trial", "512"], ("--cpus-per-trial", "512")),
    bad_space("trial-beyond-any-node-memory",  # would fail in every trial's allocator
              GOOD_SPACE.replace("nhid: 16,", "nhid: 16000000,"),
              ["largest trial cannot fit", "nhid 16000000", "GiB"]),  # fmt: skip
    search("smoke-drops-flags", ["--smoke", "--data", "ptb", "--num-samples", "5"],
           ("--smoke", "--data, --num-samples", "no effect")),
    bad_space("time-budget-shorter-than-a-start", GOOD_SPACE + "budget: {time_budget: 1s}\n",
              ["time budget '1s' is shorter than a search's start", "at least 30s"]),
    bad_space("hyperband-brackets-beyond-the-epochs",
              GOOD_SPACE + "scheduler: {type: hyperband, brackets: 4}\n",
              ["scheduler.brackets' is 4", "would never stop a trial"]),  # fmt: skip
    bad_space("epochs-searched", GOOD_SPACE + "  epochs: {int: [1, 3]}\n",
              ["parameters.epochs", "fixed: {epochs: N}"]),  # fmt: skip
    bad_space("lr-beyond-float32", GOOD_SPACE.replace("[1.0, 20.0]", "[1.0, 1.0e300]"),
              ["lr", "less than or equal"]),  # torch's float32 step overflowed in every trial
    train("train-emsize-beyond-memory", ["--emsize", "1000000000000"],
          ("emsize 1000000000000", "needs at least", "GiB free")),  # fmt: skip
    Case("resume-without-space-or-name", "search", ["--resume"], ("--resume needs --name",)),
    Case("no-space", "search", ["--num-samples", "2"], ("--space is required",)),
    # storage and tracking stores that would fail after Ray or MLflow started
    search("storage-is-a-file", ["--storage", "notes.txt"], ("--storage", "not a folder"),
           {"notes.txt": "x"}),  # fmt: skip
    search("storage-under-a-file", ["--storage", "notes.txt/runs"], ("--storage", "not a folder"),
           {"notes.txt": "x"}),  # fmt: skip
    search("storage-unwritable", ["--storage", "/proc/runs"], ("--storage", "cannot write")),
    search("storage-unknown-scheme", ["--storage", "ftp://host/runs"], ("--storage", "ftp")),
    # A URI storage's summary, report and log go to ./NAME: never over a user's files there.
    search("storage-uri-over-a-users-folder", ["--storage", "file:///tmp/tune_lm_nowhere_x",
           "--name", "mine"], ("remote storage", "mine", "would be overwritten"),
           {"mine/summary.md": "my own notes"}),  # fmt: skip
    search("name-dot-dot", ["--name", ".."], ("--name", "plain name")),
    search("name-with-slash", ["--name", "a/../../b"], ("--name", "plain name")),
    search("name-too-long", ["--name", "a" * 300], ("--name", "300 bytes", "at most 255")),
    bad_space("space-name-escapes-storage", "name: ../../escape\n" + GOOD_SPACE,
              ["field 'name'", "plain name"]),  # fmt: skip
    search("storage-empty", ["--storage", ""], ("--storage ''", "empty")),
    search("data-empty", ["--data", ""], ("--data ''", "empty")),
    search("tracking-unknown-scheme", ["--tracking-uri", "ftp://host/x"], ("--tracking-uri",
           "'ftp'")),  # fmt: skip
    search("tracking-file-store", ["--tracking-uri", "file:///tmp/mlruns"], ("--tracking-uri",
           "MLflow 3")),  # fmt: skip
    search("tracking-database-driver-missing",  # tune_lm installs no database driver
           ["--tracking-uri", "mysql://user:secret@127.0.0.1:{port}/db"],
           ("--tracking-uri", "mysql://user@127.0.0.1:", "driver is not installed")),
    search("tracking-database-does-not-answer",  # the tests install PostgreSQL's driver
           ["--tracking-uri", "postgresql://user:secret@127.0.0.1:{port}/db"],
           ("--tracking-uri", "postgresql://user@127.0.0.1:", "does not answer")),
    search("tracking-plain-folder", ["--tracking-uri", "mlruns"], ("--tracking-uri", "folder")),
    search("tracking-plain-sqlite-path", ["--tracking-uri", "mlflow.db"],
           ("--tracking-uri", "sqlite:///mlflow.db")),
    search("tracking-empty", ["--tracking-uri", ""], ("--tracking-uri ''", "empty")),
    search("data-misspelt-known-corpus", ["--data", "PTB"], ("--data 'PTB'", "'ptb'")),
    search("tracking-sqlite-unwritable", ["--tracking-uri", "sqlite:////proc/m.db"],
           ("--tracking-uri", "cannot be written")),  # fmt: skip
    search("tracking-sqlite-no-folder", ["--tracking-uri", "sqlite:///nowhere/m.db"],
           ("--tracking-uri", "does not exist")),  # fmt: skip
    search("tracking-with-space", ["--tracking-uri", "http://127.0.0.1:{port}/a b"],
           ("--tracking-uri", "white space")),  # fmt: skip
    search("tracking-in-memory", ["--tracking-uri", "sqlite:///:memory:"],
           ("--tracking-uri", "no database file")),  # fmt: skip
    search("seed-negative", ["--seed", "-1"], ("seed",)),
    search("seed-beyond-numpy", ["--seed", str(2**40)], ("seed",)),
    search("cpus-absurdly-small", ["--cpus-per-trial", "0.001"], ("cpus_per_trial",)),
    search("gpus-absurdly-small", ["--gpus-per-trial", "0.0001"], ("gpus_per_trial",)),
    dataclasses.replace(search(
        "corpus-smaller-than-a-batch",
        ["--data", "corpus"],
        ("batch_size", "500", "corpus"),
        {**corpus(), "space.yaml": GOOD_SPACE.replace("batch_size: 8, ", "")
         + "  batch_size: {choice: [8, 500]}\n"},
    ), may_leave=("cache",)),  # the corpus itself is fine: its token cache may stay  # fmt: skip
    # outputs that would only fail after training: checked before it starts
    train("train-save-is-a-folder", ["--save", "."], ("--save", "is a folder")),
    train("train-cutoffs-without-adaptive", ["--adaptive-cutoffs", "10", "20"],
          ("--adaptive-cutoffs", "--decoder adaptive")),  # fmt: skip
    Case("train-device-cuda-before-the-corpus", "train", ["--data", "corpus", "--device",
         "cuda"], ("device='cuda'", "no CUDA GPU"), corpus(),  # no token cache left
         marks=(pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here"),)),
    train("train-save-new-folder-dot", ["--save", "newdir/."], ("--save", "is a folder")),
    train("train-save-under-a-file", ["--save", "notes.txt/model.pt"], ("--save", "not a folder"),
          {"notes.txt": "x"}),  # fmt: skip
    train("train-save-unwritable", ["--save", "/proc/model.pt"], ("--save", "cannot write")),
    train("train-metrics-is-a-folder", ["--metrics-json", "."], ("--metrics-json", "is a folder")),
    train("train-metrics-under-a-file", ["--metrics-json", "notes.txt/m.json"],
          ("--metrics-json", "not a folder"), {"notes.txt": "x"}),  # fmt: skip
]


# --- issue 13, models and reports: generate, evaluate, report ---
def _torch_bytes(obj) -> bytes:
    import io

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _tiny_weights() -> dict:
    from tune_lm.lm.config import TrainConfig
    from tune_lm.lm.model import RNNLanguageModel

    config = TrainConfig(emsize=4, nhid=4, nlayers=1)
    return config, RNNLanguageModel.from_config(config, 12).state_dict()


_CONFIG, _WEIGHTS = _tiny_weights()
MODEL_PT = _torch_bytes({"format": "tune_lm.model/1", "config": _CONFIG.to_dict(),
                         "vocab": [f"w{i}" for i in range(11)] + ["<eos>"],
                         "model_state": _WEIGHTS, "metrics": {}})  # fmt: skip
# a trial's train_state.pt copied out of its experiment: no search.json above it
LONELY_STATE = _torch_bytes({"format": "tune_lm.train_state/1", "config": _CONFIG.to_dict(),
                             "model": _WEIGHTS, "best_model": _WEIGHTS})  # fmt: skip
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


CASES += [
    generate("generate-checkpoint-missing", ["--checkpoint", "nope.pt"], ("nope.pt", "exist")),
    generate("generate-model-bare-name", ["--model", "tune_lm-quick"],
             ("--model tune_lm-quick", "models:/tune_lm-quick/VERSION")),  # fmt: skip
    generate("generate-checkpoint-folder", ["--checkpoint", "."], ("--checkpoint", "folder")),
    generate("generate-checkpoint-foreign-pt", ["--checkpoint", "random.pt"],
             ("random.pt", "not a tune_lm checkpoint"), {"random.pt": _torch_bytes([1, 2])}),
    generate("generate-checkpoint-truncated", ["--checkpoint", "model.pt"], ("model.pt", "cut off"),
             {"model.pt": MODEL_PT[: len(MODEL_PT) // 2]}),
    generate("generate-checkpoint-text", ["--checkpoint", "notes.txt"], ("notes.txt",),
             {"notes.txt": "not a model\n"}),
    generate("generate-trial-state-alone", ["--checkpoint", "train_state.pt"],
             ("train_state.pt", "search.json", "checkpoints/best/model.pt"),
             {"train_state.pt": LONELY_STATE}),
    sampling("temperature", "0"),
    sampling("temperature", "-1"),
    sampling("temperature", "nan"),
    sampling("temperature", "inf"),
    sampling("temperature", "1e-310"),
    sampling("seed", "-1"),
    sampling("seed", str(2**64)),
    generate("generate-model-no-store", ["--model", "models:/tune_lm-quick/1"],
             ("--model", "mlflow.db", "nothing was created")),
    evaluate("evaluate-model-no-store", ["--model", "models:/tune_lm-quick/1"],
             ("--model", "mlflow.db", "nothing was created")),
    evaluate("evaluate-checkpoint-truncated", ["--checkpoint", "model.pt"], ("model.pt",),
             {"model.pt": MODEL_PT[:100]}),
    evaluate("evaluate-checkpoint-folder", ["--checkpoint", "."], ("--checkpoint", "folder")),
    report("report-mlflow-no-store", ["--mlflow", "quick"], ("--mlflow quick", "mlflow.db")),
    report("report-summary-truncated", ["exp"], ("exp/summary.json", "not complete JSON"),
           {"exp/summary.json": SUMMARY[:70]}),
    report("report-summary-wrong-types", ["exp"], ("exp/summary.json: trial 1", "lr [1]"),
           {"exp/summary.json": '{"space": {"parameters": {"lr": {}}, "fixed": {}}, "trials": '
            '[{"trial_id": "a", "lr": [1], "status": "completed", "best_val_ppl": 3}]}'}),
    report("report-bad-by", ["exp", "--by", "nhid", "emsize"], ("--by emsize",),
           {"exp/summary.json": SUMMARY}),
    report("report-out-onto-an-experiment",  # its summary and study would be replaced
           ["--mlflow", "quick", "--tracking-uri", "sqlite:///mlflow.db", "--out", "exp"],
           ("--out exp already holds files", "new or empty folder"),
           {"exp/summary.json": "{}\n", "exp/optuna_study.journal": "x\n"}),  # fmt: skip
    report("report-out-for-a-folder", ["exp", "--out", "x"], ("--out",),
           {"exp/summary.json": SUMMARY}),
]

def _database_bytes() -> bytes:
    with contextlib.closing(sqlite3.connect(":memory:")) as db:
        db.execute("CREATE TABLE invoices (number INTEGER)")
        return db.serialize()


OTHER_DATABASE = _database_bytes()  # another program's SQLite file named mlflow.db

CASES += [  # new-user round of stop 29
    # Output files: only what the flag itself writes is replaced, and only a regular file.
    train("train-save-over-a-foreign-checkpoint", ["--save", "pretrained.pt"],
          ("--save pretrained.pt", "written by tune_lm"),
          {"pretrained.pt": _torch_bytes({"resnet": _WEIGHTS})}),  # fmt: skip
    train("train-metrics-over-a-foreign-json", ["--metrics-json", "settings.json"],
          ("--metrics-json settings.json", "written by tune_lm"),
          {"settings.json": '{"retries": 3}\n'}),  # fmt: skip
    train("train-save-into-a-new-folder", ["--save", "newdir/"], ("--save newdir/", "folder")),
    train("train-metrics-to-stdout", ["--metrics-json", "-"], ("--metrics-json -", "file path")),
    search("name-with-a-newline", ["--name", "a\nb"], ("--name", "printable")),
    generate("generate-model-empty", ["--model", ""], ("--model ''", "empty", "--checkpoint")),
    evaluate("evaluate-model-an-experiment-folder", ["--model", "runs/good"],
             ("--model runs/good", "not an MLflow model", "models:/tune_lm-NAME/VERSION"),
             {"runs/good/summary.json": SUMMARY}),  # fmt: skip
    bad_space("section-left-empty", "data: synthetic\nbudget:\nparameters:\n"
              "  lr: {loguniform: [1.0, 20.0]}\n", ["'budget' must be a mapping", "leave it out"]),
    search("space-in-latin-1", [], ("space.yaml", "not UTF-8", "line 2, column 6", "Save"),
           {"space.yaml": b"data: synthetic\n# caf\xe9\nparameters:\n"
                          b"  lr: {loguniform: [1.0, 20.0]}\n"}),  # fmt: skip
    bad_space("baseline-twice", "data: synthetic\nparameters:\n  lr: {loguniform: [1.0, 20.0]}"
              "\nbaselines:\n  - {lr: 2}\n  - {lr: 2.0}\n", ["entry 2 repeats entry 1"]),
    search("baselines-beyond-the-trials", ["--num-samples", "1"],
           ("baselines", "3 configurations", "--num-samples"), space_with(
               "data: synthetic\nparameters:\n  lr: {loguniform: [1.0, 20.0]}\nbaselines:\n"
               "  - {lr: 2}\n  - {lr: 3}\n  - {lr: 4}\n")),  # fmt: skip
    # A store or folder that is there already must be what the search would make.
    search("mlflow-db-is-notes", [], ("mlflow.db", "not a SQLite database"),
           {"mlflow.db": "my notes\n"}),  # fmt: skip
    search("mlflow-db-of-another-program", [], ("mlflow.db", "another program's", "invoices"),
           {"mlflow.db": OTHER_DATABASE}),  # fmt: skip
    search("experiment-path-is-a-file", [], ("tune_lm_runs/space", "is a file"),
           {"tune_lm_runs/space": "x\n"}),  # fmt: skip
    # What only the corpus or torch reveals, checked before Ray starts, not in every trial.
    bad_space("adaptive-cutoffs-beyond-the-vocabulary", "data: synthetic\nfixed: {nhid: 16, "
              "decoder: adaptive, adaptive_cutoffs: [100, 200]}\nparameters:\n"
              "  lr: {loguniform: [1.0, 20.0]}\n", ["adaptive_cutoffs", "vocabulary size 50"]),
    bad_space("seed-beyond-torch", "data: synthetic\nfixed: {seed: 99999999999999999999}\n"
              "parameters:\n  lr: {loguniform: [1.0, 20.0]}\n", ["seed", "less than"]),
    train("train-seed-beyond-torch", ["--seed", "18446744073709551616"], ("--seed",)),
    # A derived option takes a range's samples, not only its (whole-number) ends.
    bad_space("derived-whole-from-floats", "data: synthetic\nparameters:\n  lr: {uniform: [1, 5]}\n"
              "derived: {nhid: lr}\n", ["derived.nhid", "whole number", "lr"]),  # fmt: skip
]


def _pinned_elsewhere(name: str, made_at: str, space_sha256: str = "") -> dict[str, str]:
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


def _tune_state_without_a_trial_folder(name: str) -> dict[str, str]:
    """A stopped experiment whose Tune state names a finished trial whose folder is gone."""
    import json

    trial = {"trial_id": "0a1b2c3d", "status": "TERMINATED",
             "relative_logdir": "train_trial_0a1b2c3d_1_lr=2.0"}
    state = {"trial_data": [[json.dumps(trial), "{}"]], "runner_data": {}, "stats": {}}
    return {**_pinned_elsewhere(name, ""),
            f"tune_lm_runs/{name}/tuner.pkl": "state",
            f"tune_lm_runs/{name}/experiment_state-2026-11-29_10-00-00.json": json.dumps(state)}


CASES += [  # new-user round of stop 31
    search("space-in-utf-16", [], ("space.yaml", "UTF-16", "Save it as UTF-8"),
           {"space.yaml": "data: synthetic\nparameters:\n  lr: {loguniform: [1.0, 20.0]}\n"
                          .encode("utf-16")}),  # fmt: skip
    search("resume-and-extend-together", ["--resume", "--extend", "1"],
           ("--resume and --extend cannot go together",)),  # fmt: skip
    search("progress-every-below-a-second", ["--progress-every", "1e-9"],
           ("--progress-every", "at least 1")),  # fmt: skip
    # Tune and Optuna restore their own copy of the space: an edit would not be searched.
    Case("extend-an-edited-space", "search", ["--extend", "1", "--name", "edited"],
         ("--extend", "edited/space.json was changed after the search started", "--warm-start"),
         _pinned_elsewhere("edited", "", space_sha256="0" * 64)),
    # Tune fails a trial whose folder is gone, and --extend rewrote its finished run KILLED.
    Case("resume-with-a-trial-folder-deleted", "search", ["--resume", "--name", "gone"],
         ("trial folder(s)", "0a1b2c3d (train_trial_0a1b2c3d_1_lr=2.0)", "--warm-start"),
         _tune_state_without_a_trial_folder("gone")),
    # A copied experiment's trials would log into the original's MLflow runs.
    Case("resume-a-copied-experiment", "search", ["--resume", "--name", "copied"],
         ("--resume", "was made at /elsewhere/tune_lm_runs/copied", "--warm-start"),
         _pinned_elsewhere("copied", "/elsewhere/tune_lm_runs/copied")),
    Case("extend-a-copied-experiment", "search", ["--extend", "2", "--name", "copied"],
         ("--extend", "was made at /elsewhere/tune_lm_runs/copied", "--warm-start"),
         _pinned_elsewhere("copied", "/elsewhere/tune_lm_runs/copied")),
    # A rehearsal trains nothing: it cannot confirm, be continued, or be run over.
    search("replay-with-confirm", ["--replay", "curves.csv", "--confirm", "2,2"],
           ("--replay", "--confirm cannot go with it")),  # fmt: skip
    search("replay-over-an-earlier-replay", ["--replay", "curves.csv", "--name", "r"],
           ("rehearsal", "r-replay exists already", "another --name"),
           {"tune_lm_runs/r-replay/replay.json": "{}"}),  # fmt: skip
    Case("resume-a-replay", "search", ["--resume", "--name", "r-replay"],
         ("--resume", "r-replay is a rehearsal (--replay)", "nothing to continue"),
         {"tune_lm_runs/r-replay/replay.json": "{}"}),
    bad_space("pbt-population-of-one", "data: synthetic\nscheduler: {type: pbt, "
              "perturbation_interval: 1}\nbudget: {num_samples: 1}\nfixed: {epochs: 3}\n"
              "parameters:\n  lr: {loguniform: [1.0, 20.0]}\n", ["population of at least 2"]),
    # --smoke's model knows the synthetic corpus's words: another corpus is refused before
    # it is trained (it was refused after training it).
    dataclasses.replace(Case("evaluate-smoke-on-another-corpus", "evaluate",
                             ["--smoke", "--data", "corpus"],
                             ("--smoke: 50 words", "--data corpus"), corpus()),
                        may_leave=("cache",)),  # fmt: skip
    # SQLAlchemy decodes a SQLite path's %XX: a written-out '%' would name another file.
    search("tracking-sqlite-percent-in-the-path", ["--tracking-uri", "sqlite:///a%2541/m.db"],
           ("/a%41/m.db", "holds a '%'")),  # fmt: skip
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Ray's own per-user token (token authentication is on): made once per user by the first
# local Ray, like a config file; a case that had to start Ray may leave it in $HOME.
RAY_USER_FILES = {"home", "home/.ray", "home/.ray/auth_token"}


def snapshot(folder: Path) -> set[str]:
    """Every path under ``folder``, a file with a digest of its bytes (so that a file
    overwritten, not only one added, shows)."""
    found = set()
    for path in folder.rglob("*"):
        name = str(path.relative_to(folder))
        if name in RAY_USER_FILES:
            continue
        if path.is_file() and not path.is_symlink():
            name += ":" + hashlib.sha1(path.read_bytes()).hexdigest()
        found.add(name)
    return found


def _env(folder: Path) -> dict[str, str]:
    # Without pytest's and CI's markers too: MLflow turns its telemetry (which writes to
    # $HOME) off when it sees them, and a user's shell has none of them.
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS", "PYTEST_CURRENT_TEST", "CI",
                        "GITHUB_ACTIONS", "GITLAB_CI", "CIRCLECI", "JENKINS_URL", "TRAVIS",
                        "BUILDKITE", "MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK")}  # fmt: skip
    # Everything a run could write to is inside the case's folder, and must stay absent.
    env.update(
        TUNE_LM_CACHE_DIR=str(folder / "cache"),
        TUNE_LM_DATA_DIR=str(folder / "data_dir"),
        HOME=str(folder / "home"),
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.mark.parametrize("case", [pytest.param(case, id=case.id, marks=case.marks)
                                  for case in CASES])  # fmt: skip
def test_bad_input_exits_2_naming_the_problem_and_leaves_nothing(tmp_path, case):
    for name, content in case.files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    port = str(free_port())
    args = [arg.replace("{port}", port) for arg in case.args]
    before = snapshot(tmp_path)

    done = run_cli(case.cli, *args, cwd=tmp_path, env=_env(tmp_path), timeout=60)

    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert len(done.stderr) < 4000, done.stderr[:4000]  # one paragraph, nothing echoed in bulk
    for expected in case.expected:
        assert expected in done.stderr, done.stderr
    assert not (tmp_path / MARKER).exists()
    if any(":secret@" in arg for arg in case.args):  # a password is never printed
        assert "secret" not in done.stdout + done.stderr, done.stderr
    after = {path for path in snapshot(tmp_path) if not path.startswith(case.may_leave or "\0")}
    assert after == before, done.stderr


def test_cases_cover_both_clis():
    assert len(CASES) >= 30 and len({case.id for case in CASES}) == len(CASES)
    assert {case.cli for case in CASES} >= {"search", "train"}


def test_a_listening_address_passes_the_check():
    from tune_lm.tuning.tuner import check_address

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        check_address(f"127.0.0.1:{port}")
        check_address(f"ray://localhost:{port}")


@pytest.mark.parametrize("address", ["auto", None])
def test_a_dead_cluster_left_behind_never_hangs_a_search(tmp_path, address):
    """`ray start` records its cluster in Ray's temp folder, and the record outlives the
    cluster. A search without --address must start its own Ray (here: the trial asks for
    more CPUs than the new local Ray has, which it then reports); --address auto must
    fail within seconds. Neither may hang on the dead address."""
    import tempfile

    ray_tmp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # short: Ray's socket paths
    (ray_tmp / "ray").mkdir()
    (ray_tmp / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{free_port()}")
    (tmp_path / "space.yaml").write_text(GOOD_SPACE)
    args = ["--space", "space.yaml", "--cpus-per-trial", "512"]
    if address:
        args += ["--address", address]
    env = {**_env(tmp_path), "RAY_TMPDIR": str(ray_tmp)}
    before = snapshot(tmp_path)
    try:
        started = time.monotonic()
        done = run_cli("search", *args, cwd=tmp_path, env=env, timeout=90)
        seconds = time.monotonic() - started
    finally:
        subprocess.run(["pkill", "-9", "-f", str(ray_tmp)], capture_output=True)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    expected = "--address auto" if address else "--cpus-per-trial"
    assert expected in done.stderr, done.stderr[-3000:]
    assert seconds < 60, seconds
    assert snapshot(tmp_path) == before



def test_resuming_with_a_saved_space_this_version_refuses_names_it(tmp_path):
    """A space saved before a check existed (here reduction_factor 1.5) is a clear error on
    --resume, not a pydantic traceback."""
    from tune_lm.lm.errors import ConfigError
    from tune_lm.tuning.experiment import read_pinned
    from tune_lm.tuning.layout import SPACE_FILE

    (tmp_path / SPACE_FILE).write_text('{"scheduler": {"reduction_factor": 1.5}}')
    with pytest.raises(ConfigError, match="reduction_factor") as error:
        read_pinned(str(tmp_path))
    assert str(tmp_path) in str(error.value) and "--name" in str(error.value)
