"""What a search prints: tune_lm's own lines, plain text, Ray's tables in the log unless
--verbose; a finished search's --resume changes nothing (--smoke: test_shipped_spaces.py)."""

import hashlib
import re
import textwrap
from pathlib import Path

import pytest
from cli_run import run_cli
from mlflow.tracking import MlflowClient

from tune_lm.tuning.layout import LOG_FILE

REPO_ROOT = Path(__file__).resolve().parents[1]
ANSI = "\x1b["
RAY_TABLE = "Trial status:"  # the head of Ray's status table


def search(*flags, cwd, tracking, timeout=600, **env_extra):
    return run_cli("search", *flags, cwd=cwd, timeout=timeout,
                   env={"MLFLOW_TRACKING_URI": tracking, **env_extra})


def folder_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


@pytest.mark.slow
def test_the_console_shows_tune_lms_own_lines_in_plain_text(asha_search):
    done, folder = asha_search
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    output = done.stdout + done.stderr
    lines = output.splitlines()
    assert len(lines) < 60, output
    assert ANSI not in output and RAY_TABLE not in output and "╭" not in output, output
    assert "Tuner.restore" not in output
    # Settings as a person writes them (no 0.30000000000000004, no 4.00 epochs).
    assert not re.search(r"\d\.\d{7,}", done.stdout), done.stdout
    table = [line for line in lines if line.startswith("| ") and "completed" in line]
    assert table and all(re.search(r"\| 4 \|", line) for line in table), table
    assert "| 4.00 |" not in done.stdout and "| 0.00 |" not in done.stdout
    assert "best model: models:/tune_lm-t/1" in done.stdout
    log_line = next(line for line in lines if line.startswith("log: "))
    log = Path(log_line.split()[1])
    assert log == folder / LOG_FILE and RAY_TABLE in log.read_text()  # Ray's table is kept


@pytest.mark.slow
def test_resume_of_a_finished_search_says_so_and_changes_nothing(asha_search):
    done, folder = asha_search
    assert done.returncode == 0
    tracking = f"sqlite:///{folder.parent.parent / 'mlflow.db'}"
    client = MlflowClient(tracking)
    before = folder_digest(folder)
    runs_before = len(client.search_runs([client.get_experiment_by_name("t").experiment_id]))
    again = search("--resume", "--storage", str(folder.parent), "--name", "t", cwd=REPO_ROOT,
                   tracking=tracking, timeout=120)  # fmt: skip
    assert again.returncode == 0, again.stdout + again.stderr
    assert "nothing to resume" in again.stdout and "models:/tune_lm-t/1" in again.stdout
    assert folder_digest(folder) == before
    assert len(client.search_runs([client.get_experiment_by_name("t").experiment_id])) == (
        runs_before
    )
    assert [str(v.version) for v in client.search_model_versions("name='tune_lm-t'")] == ["1"]


@pytest.mark.slow
def test_verbose_brings_rays_table_back_without_colour_codes(tmp_path):
    space = tmp_path / "loud.yaml"
    space.write_text(textwrap.dedent("""
        data: synthetic
        searcher: {type: optuna, sampler: random}
        scheduler: {type: fifo}
        budget: {num_samples: 2, max_concurrent: 2}
        resources: {cpus_per_trial: 1}
        fixed: {epochs: 1, nlayers: 1, emsize: 8, nhid: 8, batch_size: 8, bptt: 10,
                max_tokens_per_epoch: 800}
        parameters:
          lr: {loguniform: [1.0, 20.0]}
    """))
    done = search("--space", str(space), "--storage", str(tmp_path / "runs"), "--verbose",
                  cwd=tmp_path, tracking=f"sqlite:///{tmp_path / 'mlflow.db'}")  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    output = done.stdout + done.stderr
    assert RAY_TABLE in output and ANSI not in output, output[-3000:]
    assert not (tmp_path / "runs" / "loud" / LOG_FILE).exists()
