"""The layer contract (pyproject.toml, [tool.importlinter]): lm < tuning < tracking <
reporting < the command-line modules, no cycles, no Ray or MLflow in the language model,
no Ray in a report. Checked statically by import-linter (function-level imports count)
and at run time by the modules a command really imports."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """import-linter on the package under ``root`` with ``root``'s pyproject.toml."""
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(root / "pyproject.toml"), "--no-cache"],
        capture_output=True, text=True, timeout=300, cwd=root,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)},
    )  # fmt: skip


def test_the_package_keeps_its_layer_contract():
    done = lint_imports(REPO_ROOT)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "4 kept, 0 broken" in done.stdout


@pytest.mark.parametrize(
    ("module", "planted", "contract"),
    [
        ("lm/model.py", "from tune_lm.tuning import layout", "layers"),
        ("tuning/results.py", "from tune_lm.tracking import tags", "layers"),
        ("lm/fit.py", "import mlflow", "the language model needs torch only"),
        ("reporting/plots.py", "from tune_lm.tuning import tuner", "never imports Ray"),
        ("lm/corpus.py", "from tune_lm.lm import data", "no import cycles"),
    ],
)
@pytest.mark.slow
def test_the_contract_fails_when_a_module_breaks_it(tmp_path, module, planted, contract):
    """A copy of the package with one forbidden import planted (inside a function, where
    it is easy to miss) breaks the contract, and the output names it."""
    shutil.copytree(REPO_ROOT / "tune_lm", tmp_path / "tune_lm",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    shutil.copy(REPO_ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / "tune_lm" / module
    target.write_text(target.read_text() + f"\n\ndef _planted():\n    {planted}\n")
    done = lint_imports(tmp_path)
    assert done.returncode != 0, done.stdout[-3000:]
    broken = done.stdout.split("Broken contracts", 1)[-1]
    assert contract in broken, broken[-3000:]


def imported_top_packages(*args: str, cwd: Path | None = None) -> tuple[int, set[str], str]:
    """(exit code, top-level packages imported, stderr without the import-time lines) of
    ``python -X importtime -m ARGS``."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", *args], capture_output=True,
                          text=True, timeout=300, cwd=cwd)  # fmt: skip
    names, other = set(), []
    for line in done.stderr.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+\d+ \|\s+(\S+)", line)
        if match:
            names.add(match.group(1).split(".")[0])
        elif not line.startswith("import time:"):
            other.append(line)
    return done.returncode, names, "\n".join(other)


@pytest.mark.slow
def test_evaluating_a_checkpoint_imports_neither_ray_nor_mlflow(tmp_path):
    import torch

    from tune_lm.lm.checkpoint import save_model
    from tune_lm.lm.config import TrainConfig
    from tune_lm.lm.model import RNNLanguageModel
    from tune_lm.lm.synthetic import make_synthetic_corpus

    corpus = make_synthetic_corpus(train_tokens=2000, valid_tokens=300, test_tokens=300, seed=1)
    config = TrainConfig(data="synthetic", emsize=8, nhid=8, nlayers=1, batch_size=4, bptt=5)
    torch.manual_seed(0)
    save_model(tmp_path / "m.pt", RNNLanguageModel.from_config(config, corpus.ntokens), config,
               corpus.vocab)  # fmt: skip
    code, names, stderr = imported_top_packages(
        "tune_lm.evaluate", "--checkpoint", str(tmp_path / "m.pt"), "--data", "synthetic")
    assert code == 0, stderr[-2000:]
    assert "torch" in names and "tune_lm" in names
    assert not names & {"ray", "mlflow", "optuna"}, sorted(names & {"ray", "mlflow", "optuna"})


@pytest.mark.slow
def test_a_report_from_a_folder_or_from_mlflow_never_imports_ray(asha_search, tmp_path):
    done, folder = asha_search
    assert done.returncode == 0, done.stderr[-2000:]
    code, names, stderr = imported_top_packages("tune_lm.report", str(folder))
    assert code == 0, stderr[-2000:]
    assert "matplotlib" in names and "ray" not in names
    code, names, stderr = imported_top_packages(
        "tune_lm.report", "--mlflow", "t", "--tracking-uri",
        f"sqlite:///{folder.parent.parent / 'mlflow.db'}", "--out", str(tmp_path / "copy"))
    assert code == 0, stderr[-2000:]
    assert "mlflow" in names and "ray" not in names


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["tune_lm.search", "--space", "quick.yaml", "--data", "nowhere"], "nowhere"),
        (["tune_lm.search", "--space", "quick.yaml", "--data", "corpus"], "train.txt is empty"),
        (["tune_lm.search", "--space", "quick.yaml", "--data", "corpus", "--tracking-uri",
          "sqlite:///:memory:"], "train.txt is empty"),  # the corpus is checked first
        (["tune_lm.search", "--space", "quick.yaml", "--tracking-uri", "sqlite:///:memory:"],
         "no database file"),
        (["tune_lm.search", "--space", "quick.yaml", "--tracking-uri", "http://127.0.0.1:9"],
         "does not answer"),
        (["tune_lm.train", "--data", "corpus"], "train.txt is empty"),
    ],
)
def test_a_wrong_corpus_or_store_is_refused_before_torch_ray_or_mlflow_is_imported(
        tmp_path, args, expected):  # fmt: skip
    """Cheap checks first: a refusal a user meets often answers in a fraction of a
    second, not after seconds of imports."""
    (tmp_path / "corpus").mkdir()
    for split, text in (("train", ""), ("valid", "a b\n"), ("test", "b a\n")):
        (tmp_path / "corpus" / f"{split}.txt").write_text(text)
    code, names, stderr = imported_top_packages(*args, cwd=tmp_path)
    assert code == 2 and expected in stderr, stderr[-2000:]
    assert not names & {"torch", "ray", "mlflow"}, sorted(names & {"torch", "ray", "mlflow"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus"]  # nothing written
