"""Bad input to `python -m tune_lm.search`: the space file, the corpus, servers, the
experiment and the flags."""

import dataclasses

import pytest
import torch
from bad_input_kit import (
    ALIAS_BOMB,
    GOOD_LINES,
    GOOD_SPACE,
    GRID_SPACE,
    MARKER,
    OTHER_DATABASE,
    Case,
    bad_space,
    corpus,
    pinned_elsewhere,
    search,
    space_with,
    tune_state_without_a_trial_folder,
)

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
    # issue 13: budgets Ray would misread, resources no node has
    search("time-budget-zero", ["--time-budget", "0s"], ("--time-budget", "more than 0")),
    search("time-budget-ambiguous", ["--time-budget", "2h30"], ("--time-budget", "ambiguous")),
    # A value beginning with a dash is the flag's value (argparse said "expected one
    # argument"), so the flag's own check names what is wrong with it.
    search("time-budget-negative", ["--time-budget", "-5m"], ("--time-budget", "-5m")),
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
    search("name-with-a-newline", ["--name", "a\nb"], ("--name", "printable")),
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
    # A derived option takes a range's samples, not only its (whole-number) ends.
    bad_space("derived-whole-from-floats", "data: synthetic\nparameters:\n  lr: {uniform: [1, 5]}\n"
              "derived: {nhid: lr}\n", ["derived.nhid", "whole number", "lr"]),  # fmt: skip
    # new-user round of stop 31
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
         pinned_elsewhere("edited", "", space_sha256="0" * 64)),
    # Tune fails a trial whose folder is gone, and --extend rewrote its finished run KILLED.
    Case("resume-with-a-trial-folder-deleted", "search", ["--resume", "--name", "gone"],
         ("trial folder(s)", "0a1b2c3d (train_trial_0a1b2c3d_1_lr=2.0)", "--warm-start"),
         tune_state_without_a_trial_folder("gone")),
    # A copied experiment's trials would log into the original's MLflow runs.
    Case("resume-a-copied-experiment", "search", ["--resume", "--name", "copied"],
         ("--resume", "was made at /elsewhere/tune_lm_runs/copied", "--warm-start"),
         pinned_elsewhere("copied", "/elsewhere/tune_lm_runs/copied")),
    Case("extend-a-copied-experiment", "search", ["--extend", "2", "--name", "copied"],
         ("--extend", "was made at /elsewhere/tune_lm_runs/copied", "--warm-start"),
         pinned_elsewhere("copied", "/elsewhere/tune_lm_runs/copied")),
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
    # Every trial of a single configuration would train it alike, with one seed.
    bad_space("one-configuration-many-trials", GOOD_SPACE.replace(
        "{loguniform: [1.0, 20.0]}", "{choice: [5.0]}") + "budget: {num_samples: 3}\n",
        ["one configuration ({'lr': 5.0})", "num_samples: 1", "grid"]),
    bad_space("parameter-in-capitals",
              "data: synthetic\nparameters:\n  LR: {loguniform: [1, 20]}\n",
              ["parameters.LR", "Did you mean 'lr'?"]),  # fmt: skip
    # SQLAlchemy decodes a SQLite path's %XX: a written-out '%' would name another file.
    search("tracking-sqlite-percent-in-the-path", ["--tracking-uri", "sqlite:///a%2541/m.db"],
           ("/a%41/m.db", "holds a '%'")),  # fmt: skip
]
