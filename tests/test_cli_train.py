"""`python -m tune_lm.train` end to end, and its errors."""

import json
import subprocess
from pathlib import Path

import pytest
import torch
from cli_run import run_cli, start_cli

from tune_lm.lm.checkpoint import load_model
from tune_lm.lm.data import load_corpus
from tune_lm.lm.evaluate import EvalSplit, evaluate_loss
from tune_lm.lm.metrics import perplexity

# Every test here runs a command in a subprocess (seconds each): not in the fast tier.
pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_train(*flags, cwd=None, env=None):
    return run_cli("train", *flags, cwd=cwd, env=env, timeout=300)


@pytest.fixture
def corpus_folder(tmp_path):
    folder = tmp_path / "tiny"
    folder.mkdir()
    words = "the cat sat on the mat and the dog sat on the log".split()
    lines = [" ".join(words[i % 5 : i % 5 + 6]) for i in range(120)]
    for split, count in (("train", 100), ("valid", 10), ("test", 10)):
        (folder / f"{split}.txt").write_text("\n".join(lines[:count]) + "\n")
    return folder


def test_train_on_a_corpus_folder_end_to_end(tmp_path, corpus_folder):
    save, metrics_path = tmp_path / "model.pt", tmp_path / "metrics.json"
    done = run_train(
        "--data",
        str(corpus_folder),
        "--emsize",
        "16",
        "--nhid",
        "16",
        "--nlayers",
        "1",
        "--epochs",
        "2",
        "--batch-size",
        "4",
        "--bptt",
        "8",
        "--lr",
        "5",
        "--tied",
        "--seed",
        "3",
        "--device",
        "cpu",
        "--save",
        str(save),
        "--metrics-json",
        str(metrics_path),
    )
    assert done.returncode == 0, done.stderr
    epoch_lines = [line for line in done.stdout.splitlines() if line.startswith("| epoch")]
    assert len(epoch_lines) == 2 and "valid ppl" in epoch_lines[0] and "tok/s" in epoch_lines[0]
    assert "test ppl" in done.stdout

    recorded = json.loads(metrics_path.read_text())
    assert len(recorded["history"]) == 2
    assert recorded["config"]["tied"] is True
    # The checkpoint loads with weights_only and reproduces the best validation perplexity.
    raw = torch.load(save, weights_only=True)
    assert raw["vocab"][0] and "model_state" in raw
    model, config, vocab = load_model(save)
    corpus = load_corpus(str(corpus_folder))
    assert list(vocab) == list(corpus.vocab)
    split = EvalSplit(
        corpus.valid, config.eval_batch_size, vocab.index("<eos>"), torch.device("cpu")
    )
    reproduced = perplexity(evaluate_loss(model, split, config.bptt))
    assert reproduced == pytest.approx(recorded["final"]["best_val_ppl"], rel=1e-6)


def test_smoke_mode_runs_offline(tmp_path):
    done = run_train("--smoke", "--save", "", "--quiet", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "test ppl" in done.stdout
    assert not list(tmp_path.iterdir())  # --save '' writes nothing


def test_a_quoted_tilde_is_the_home_folder_for_every_check_and_write(tmp_path):
    """``'~/m.pt'`` (quoted, or ``--save=~/...``: the shell expands neither) is the home
    folder's file, as the shell would have made it: the check and the write see one path,
    and a user's own ``./~/m.pt`` is never touched or a literal ``./~`` made."""
    home = tmp_path / "home"
    home.mkdir()
    (tmp_path / "~").mkdir()
    (tmp_path / "~" / "m.pt").write_text("my notes")
    done = run_train("--smoke", "--quiet", "--save", "~/m.pt", "--metrics-json=~/m.json",
                     cwd=tmp_path, env={"HOME": str(home)})  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "~" / "m.pt").read_text() == "my notes"
    assert sorted(p.name for p in home.iterdir()) == ["m.json", "m.pt"]
    again = run_train("--smoke", "--quiet", "--save", str(home / "m.pt"), "--metrics-json",
                      "~/m.pt", cwd=tmp_path, env={"HOME": str(home)})  # fmt: skip
    assert again.returncode == 2 and "same file" in again.stderr, again.stderr


@pytest.mark.parametrize(
    "flags,expected",
    [
        (["--emsiz", "100"], "unrecognized arguments: --emsiz"),
        (["--emsize", "10", "--nhid", "20", "--tied"], "nhid == emsize"),
        (["--model", "TRANSFORMER"], "invalid choice"),
        (["--dropout", "1.5"], "dropout"),
        (["--data", "no-such-corpus"], "no-such-corpus"),
    ],
)
def test_bad_flags_exit_2_with_a_message(tmp_path, flags, expected):
    done = run_train("--smoke", *flags, cwd=tmp_path)
    assert done.returncode == 2
    assert expected in done.stderr
    assert "Traceback" not in done.stderr
    assert not list(tmp_path.iterdir())


def _bad_folder(tmp_path, case):
    folder = tmp_path / case
    folder.mkdir()
    good = "a b c d e f g h\n" * 50
    files = {"train.txt": good, "valid.txt": "a b\n", "test.txt": "c d\n"}
    if case == "missing":
        del files["valid.txt"]
    elif case == "empty":
        files["test.txt"] = ""
    elif case == "tiny":
        files["train.txt"] = "a b\n"
    for name, text in files.items():
        (folder / name).write_text(text)
    if case == "binary":
        (folder / "valid.txt").write_bytes(b"fine line\n\xff\xfe broken\n")
    return folder


def test_corpus_warnings_reach_the_terminal(tmp_path):
    """A BOM is dropped with a note, a valid split unrelated to train warns; both show."""
    folder = tmp_path / "odd"
    folder.mkdir()
    (folder / "train.txt").write_text("\ufeff" + "a b c d e f g h\n" * 50)
    (folder / "valid.txt").write_text("x y z\n" * 5)
    (folder / "test.txt").write_text("a b\n")
    done = run_train("--smoke", "--data", str(folder), "--save", "", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "train.txt: starts with a byte-order mark" in done.stderr
    assert "valid.txt: NONE of its 15 words" in done.stderr


@pytest.mark.parametrize(
    "case,expected",
    [
        ("missing", "valid.txt"),
        ("empty", "test.txt"),
        ("binary", "line 2"),
        ("tiny", "fewer than one batch"),
    ],
)
def test_bad_data_exits_2_with_the_file_named(tmp_path, case, expected):
    folder = _bad_folder(tmp_path, case)
    done = run_train("--smoke", "--data", str(folder), "--save", "", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert expected in done.stderr and "Traceback" not in done.stderr


def test_ctrl_c_keeps_the_best_weights_and_the_metrics(tmp_path):
    """Ctrl-C (or SIGTERM) mid-training: the best weights so far and the metrics are
    saved, a summary without a test score is printed, exit 130."""
    import os
    import signal
    import time

    process = start_cli("train", "--smoke", "--epochs", "500", "--save", "best.pt",
                        "--metrics-json", "metrics.json", cwd=tmp_path, stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE, text=True)  # fmt: skip
    lines = []
    deadline = time.time() + 120
    while sum(line.startswith("| epoch") for line in lines) < 2:
        assert time.time() < deadline and process.poll() is None, lines
        lines.append(process.stdout.readline())
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, out + err
    assert "interrupted at epoch" in out and "no test score" in out, out
    assert "Traceback" not in err, err
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["interrupted"] is True and "test_ppl" not in metrics["final"]
    assert len(metrics["history"]) >= 2
    umask = os.umask(0o022)
    os.umask(umask)
    for written in ("best.pt", "metrics.json"):  # an ordinary file's mode, not mkstemp's 0600
        assert (tmp_path / written).stat().st_mode & 0o777 == 0o666 & ~umask, written
    model, config, vocab = load_model(tmp_path / "best.pt")
    assert config.epochs == 500 and len(vocab) == model.ntokens
    best = min(entry["val_ppl"] for entry in metrics["history"])
    assert metrics["final"]["best_val_ppl"] == pytest.approx(best)


def test_an_output_path_that_is_not_a_regular_file_is_refused(tmp_path):
    """A FIFO (a device such as /dev/null alike): writing the output renames a new file
    over it, which replaced /dev/null when run as root."""
    import os

    from tune_lm.lm.errors import ConfigError
    from tune_lm.train import check_output_path

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for flag in ("--save", "--metrics-json"):
        with pytest.raises(ConfigError, match="not a regular file"):
            check_output_path(flag, str(fifo))
    assert fifo.exists() and not fifo.is_file()
