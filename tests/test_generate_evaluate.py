"""`python -m tune_lm.generate` and `python -m tune_lm.evaluate` on a trained checkpoint."""

import json
import math
import re

import pytest
from cli_run import run_cli

from tune_lm.lm import metrics as M
from tune_lm.lm.checkpoint import save_model
from tune_lm.lm.config import TrainConfig
from tune_lm.lm.data import write_corpus_folder
from tune_lm.lm.fit import fit
from tune_lm.lm.model import RNNLanguageModel
from tune_lm.lm.synthetic import make_synthetic_corpus

# Every test here runs a command in a subprocess (seconds each): not in the fast tier.
pytestmark = pytest.mark.slow


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
    from tune_lm.lm.config import TrainConfig

    return TrainConfig(data="synthetic", emsize=16, nhid=16, nlayers=1, epochs=2,
                       batch_size=8, bptt=10, lr=5.0, threads=1)  # fmt: skip


def run(module, *flags):
    return run_cli(module, *flags, timeout=300)


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


def test_weights_that_diverged_are_refused_by_both_commands(trained, tmp_path):
    """NaN weights (what a diverged run could save) made generate a traceback in
    torch.multinomial and evaluate print perplexity inf."""
    _, folder, corpus, result = trained
    config = TrainConfig(data="synthetic", emsize=16, nhid=16, nlayers=1, epochs=2,
                         batch_size=8, bptt=10, lr=5.0, threads=1)  # fmt: skip
    state = {k: v.clone() for k, v in result.best_model_state.items()}
    state["rnn.weight_hh_l0"].fill_(float("nan"))
    path = tmp_path / "diverged.pt"
    model = RNNLanguageModel.from_config(config, corpus.ntokens)
    save_model(path, model, config, corpus.vocab, model_state=state)
    for command in (["tune_lm.generate", "--words", "5"],
                    ["tune_lm.evaluate", "--data", str(folder)]):  # fmt: skip
        done = run(*command, "--checkpoint", str(path))
        assert done.returncode == 2, done.stdout + done.stderr
        assert "NaN or infinite" in done.stderr and "rnn.weight_hh_l0" in done.stderr
        assert "Traceback" not in done.stderr


# --- issue 13: a trial's own checkpoint, foreign corpora, the registered model ---


@pytest.fixture(scope="module")
def trial_state(tmp_path_factory, tiny_config_module):
    """A trial's train_state.pt where a search leaves it, written as the trainable writes
    it (TrainState.to_dict() from fit's callback), with the experiment's pinned corpus."""
    from tune_lm.lm.checkpoint import STATE_FILE, atomic_torch_save
    from tune_lm.lm.data import load_corpus
    from tune_lm.tuning.experiment import SearchSettings, write_pinned
    from tune_lm.tuning.space import SearchSpace

    corpus = load_corpus("synthetic")
    states = []

    def keep(epoch, metrics, state):  # what the trainable saves at every evaluation
        states.append(state.to_dict())

    result = fit(tiny_config_module, corpus=corpus, on_epoch_end=keep)
    experiment = tmp_path_factory.mktemp("runs") / "quick"
    state_file = experiment / "train_trial_0001_1_lr=5" / "checkpoint_000001" / STATE_FILE
    atomic_torch_save(states[-1], state_file)
    lr = {"loguniform": [1.0, 20.0]}
    space = SearchSpace.model_validate({"data": "synthetic", "parameters": {"lr": lr}})
    write_pinned(str(experiment), space, SearchSettings(
        data="synthetic", corpus_name=corpus.name, fingerprint=corpus.fingerprint,
        ntokens=corpus.ntokens, tracking_uri="sqlite:///unused.db", log_checkpoints="best",
        progress_every=30.0))  # fmt: skip
    return state_file, result


def test_a_trials_own_checkpoint_generates_and_evaluates(trial_state, tmp_path):
    state_file, result = trial_state
    done = run("tune_lm.evaluate", "--checkpoint", str(state_file), "--data", "synthetic")
    assert done.returncode == 0, done.stderr
    printed = float(done.stdout.split("test perplexity ")[1].split()[0])
    # the best-validation weights, scored as fit scored them
    assert printed == pytest.approx(result.metrics[M.TEST_PPL], abs=0.01)
    done = run("tune_lm.generate", "--checkpoint", str(state_file), "--words", "20")
    assert done.returncode == 0 and done.stdout.split(), done.stderr
    # A confirmation trial's, one folder deeper (EXPERIMENT/confirm/TRIAL/...), too.
    confirming = (state_file.parents[2] / "confirm" / "confirm_trial_0001_seed=1003"
                  / "checkpoint_000001" / state_file.name)  # fmt: skip
    confirming.parent.mkdir(parents=True, exist_ok=True)
    confirming.write_bytes(state_file.read_bytes())
    done = run("tune_lm.generate", "--checkpoint", str(confirming), "--words", "5")
    assert done.returncode == 0 and done.stdout.split(), done.stderr
    # Alone, it has no vocabulary: refused, naming the file to use instead.
    lonely = tmp_path / "train_state.pt"
    lonely.write_bytes(state_file.read_bytes())
    done = run("tune_lm.generate", "--checkpoint", str(lonely))
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert str(lonely) in done.stderr and "search.json" in done.stderr
    assert "checkpoints/best/model.pt" in done.stderr


def test_a_trials_checkpoint_whose_corpus_changed_is_refused(trial_state, tmp_path):
    import shutil

    from tune_lm.lm.data import write_corpus_folder
    from tune_lm.lm.synthetic import make_synthetic_corpus

    state_file, _ = trial_state
    experiment = tmp_path / "quick"
    shutil.copytree(state_file.parents[2], experiment)
    corpus_folder = tmp_path / "corpus"
    write_corpus_folder(make_synthetic_corpus(train_tokens=3000, seed=9), corpus_folder)
    settings = json.loads((experiment / "search.json").read_text())
    settings.update(data=str(corpus_folder), fingerprint="0" * 64)  # not what is there now
    (experiment / "search.json").write_text(json.dumps(settings))
    copied = experiment / state_file.relative_to(state_file.parents[2])
    done = run("tune_lm.generate", "--checkpoint", str(copied))
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "changed since the search" in done.stderr and "search.json" in done.stderr


@pytest.fixture(scope="module")
def unk_model(tmp_path_factory, tiny_config_module):
    """A model whose corpus has <unk> (as PTB and WikiText-2 do), and a corpus of mostly
    other words."""
    from tune_lm.lm.data import load_corpus

    root = tmp_path_factory.mktemp("unk")
    lines = "".join(f"w{i % 40} w{(i * 7) % 40} <unk> w{(i * 3) % 40}\n" for i in range(600))
    for folder, text in (("model_corpus", lines), ("other", "the cat sat on the mat\n" * 50)):
        (root / folder).mkdir()
        for split in ("train", "valid", "test"):
            (root / folder / f"{split}.txt").write_text(text)
    corpus = load_corpus(str(root / "model_corpus"))
    config = tiny_config_module.replace(data=str(root / "model_corpus"), epochs=1)
    result = fit(config, corpus=corpus)
    path = root / "model.pt"
    model = RNNLanguageModel.from_config(config, corpus.ntokens)
    save_model(path, model, config, corpus.vocab, model_state=result.best_model_state)
    return path, root


def test_a_corpus_with_another_vocabulary_is_refused_unless_forced(unk_model):
    checkpoint, root = unk_model
    other = str(root / "other")
    done = run("tune_lm.evaluate", "--checkpoint", str(checkpoint), "--data", other)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    for named in (str(checkpoint), other, "--force", "never saw"):
        assert named in done.stderr, done.stderr
    assert "perplexity" not in done.stdout
    forced = run("tune_lm.evaluate", "--checkpoint", str(checkpoint), "--data", other, "--force")
    assert forced.returncode == 0 and "test perplexity" in forced.stdout, forced.stderr
    assert "warning" in forced.stderr and "not comparable" in forced.stderr
    # its own corpus, read again: same vocabulary, no warning
    own = run("tune_lm.evaluate", "--checkpoint", str(checkpoint), "--data",
              str(root / "model_corpus"))  # fmt: skip
    assert own.returncode == 0 and "warning" not in own.stderr, own.stderr


def test_the_registered_models_perplexity_does_not_depend_on_eval_batch_size(trained, tmp_path):
    """predict() reads a text as one stream: eval_batch_size (a training setting) must
    not change the answer."""
    from types import SimpleNamespace

    from tune_lm.lm.checkpoint import load_model
    from tune_lm.tracking.registry import LanguageModelPyfunc

    checkpoint = trained[0]
    model, config, vocab = load_model(checkpoint)
    texts = [" ".join(vocab[3:40]) + "\n" + " ".join(vocab[10:30]), "w1 w2 w3", "", "  \n "]
    answers = []
    for eval_batch_size in (1, 7, 64):
        path = tmp_path / f"ebs{eval_batch_size}.pt"
        save_model(path, model, config.replace(eval_batch_size=eval_batch_size), vocab)
        wrapper = LanguageModelPyfunc()
        wrapper.load_context(SimpleNamespace(artifacts={"checkpoint": str(path)}))
        answers.append(wrapper.predict(texts))
    assert answers[0][:2] == pytest.approx(answers[1][:2], rel=1e-6)
    assert answers[0][:2] == pytest.approx(answers[2][:2], rel=1e-6)
    assert all(math.isfinite(a) and a > 1 for a in answers[0][:2])
    assert math.isnan(answers[0][2])  # an empty text has no perplexity
    assert math.isnan(answers[0][3])  # nor one of blank lines (was the <eos>'s, 163.8)
    assert "<unk>" not in vocab  # a word it never saw: which text, which word
    with pytest.raises(ValueError, match=r"text 1 of 2: .*\(zebra\)"):
        wrapper.predict(["w1", "w1 zebra"])


def test_an_unknown_registered_model_names_what_exists_and_creates_no_store(tmp_path):
    from mlflow.tracking import MlflowClient

    store = tmp_path / "mlflow.db"
    MlflowClient(f"sqlite:///{store}").create_registered_model("tune_lm-quick")
    uri = f"sqlite:///{store}"
    done = run("tune_lm.generate", "--model", "models:/nope/1", "--tracking-uri", uri)
    assert done.returncode == 2 and "tune_lm-quick" in done.stderr, done.stderr
    done = run("tune_lm.evaluate", "--model", "models:/tune_lm-quick/3", "--tracking-uri", uri,
               "--data", "synthetic")  # fmt: skip
    assert done.returncode == 2 and "no version 3" in done.stderr, done.stderr
    missing = tmp_path / "elsewhere" / "mlflow.db"
    done = run("tune_lm.generate", "--model", "models:/tune_lm-quick/1", "--tracking-uri",
               f"sqlite:///{missing}")  # fmt: skip
    assert done.returncode == 2 and str(missing) in done.stderr, done.stderr
    assert not missing.parent.exists()


def test_registered_names_of_other_scripts_stay_apart():
    from tune_lm.tracking.registry import registered_name

    names = ["实验一", "实验二", "эксперимент", "my search", "my-search", "quick"]
    registered = [registered_name(name) for name in names]
    assert len(set(registered)) == len(names), registered
    assert registered_name("quick") == "tune_lm-quick"  # plain names stay as they were
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+", name) for name in registered)


def test_generate_and_evaluate_smoke_modes_train_a_tiny_model_and_use_it():
    """``--smoke``: a tiny model trained in seconds on the synthetic corpus, offline."""
    generated = run("tune_lm.generate", "--smoke", "--words", "30")
    assert generated.returncode == 0, generated.stderr[-2000:]
    words = generated.stdout.split()
    assert words and all(re.fullmatch(r"w\d+", word) for word in words), generated.stdout
    scored = run("tune_lm.evaluate", "--smoke")
    assert scored.returncode == 0, scored.stderr[-2000:]
    ppl = float(re.search(r"test perplexity ([\d.]+)", scored.stdout).group(1))
    assert 1 < ppl < 50 / 2, scored.stdout  # far below a uniform guess over its 50 words
