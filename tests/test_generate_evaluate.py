"""`python -m tune_lm.generate` and `python -m tune_lm.evaluate` on a trained checkpoint."""

import subprocess
import sys

import pytest

from tune_lm import metrics as M
from tune_lm.checkpoint import save_model
from tune_lm.data import write_corpus_folder
from tune_lm.fit import fit
from tune_lm.model import RNNLanguageModel
from tune_lm.synthetic import make_synthetic_corpus


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_config_module):
    root = tmp_path_factory.mktemp("trained")
    corpus = make_synthetic_corpus(train_tokens=5000, valid_tokens=800, test_tokens=800, seed=4)
    write_corpus_folder(corpus, root / "corpus")
    result = fit(tiny_config_module, corpus=corpus)
    path = root / "model.pt"
    model = RNNLanguageModel.from_config(tiny_config_module, corpus.ntokens)
    save_model(path, model, tiny_config_module, corpus.vocab, model_state=result.best_model_state)
    return path, root / "corpus", corpus, result


@pytest.fixture(scope="module")
def tiny_config_module():
    from tune_lm.config import TrainConfig

    return TrainConfig(data="synthetic", emsize=16, nhid=16, nlayers=1, epochs=2,
                       batch_size=8, bptt=10, lr=5.0, threads=1)  # fmt: skip


def run(module, *flags):
    return subprocess.run([sys.executable, "-m", module, *flags], capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def test_generation_is_reproducible_and_uses_only_vocabulary_words(trained):
    checkpoint, _, corpus, _ = trained
    first = run("tune_lm.generate", "--checkpoint", str(checkpoint), "--words", "60", "--seed", "5")
    again = run("tune_lm.generate", "--checkpoint", str(checkpoint), "--words", "60", "--seed", "5")
    other = run("tune_lm.generate", "--checkpoint", str(checkpoint), "--words", "60", "--seed", "6")
    assert first.returncode == 0, first.stderr
    assert first.stdout == again.stdout != other.stdout
    words = first.stdout.split()
    assert words and set(words) <= set(corpus.vocab)
    assert len(words) + first.stdout.count("\n") >= 60 - 1  # <eos> became line breaks


def test_evaluate_reproduces_the_test_perplexity(trained):
    checkpoint, folder, _, result = trained
    done = run("tune_lm.evaluate", "--checkpoint", str(checkpoint), "--data", str(folder),
               "--split", "test")  # fmt: skip
    assert done.returncode == 0, done.stderr
    printed = float(done.stdout.split("test perplexity ")[1].split()[0])
    assert printed == pytest.approx(result.metrics[M.TEST_PPL], abs=0.01)


def test_bad_generation_flags_exit_2(trained):
    checkpoint = trained[0]
    done = run("tune_lm.generate", "--checkpoint", str(checkpoint), "--temperature", "0")
    assert done.returncode == 2 and "--temperature" in done.stderr
    done = run("tune_lm.generate", "--checkpoint", str(checkpoint.parent / "missing.pt"))
    assert done.returncode == 2 and "missing.pt" in done.stderr
