"""MLflow tracking against a real `mlflow server` on loopback, over HTTP."""

import re
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import mlflow
import pytest
import torch
from cli_run import run_cli, start_cli
from conftest import stop_process  # noqa: E402  (tests/ is on sys.path)
from mlflow.tracking import MlflowClient

from tune_lm.lm import metrics as M
from tune_lm.lm.checkpoint import load_model
from tune_lm.lm.data import write_corpus_folder
from tune_lm.lm.evaluate import EvalSplit, evaluate_loss
from tune_lm.lm.synthetic import make_synthetic_corpus
from tune_lm.tracking.tags import PARENT_TAG, TAG_KIND, TAG_STATUS
from tune_lm.tracking.trial_runs import LOGGED_METRICS

REPO_ROOT = Path(__file__).resolve().parents[1]
FINAL_METRICS = {M.BEST_VAL_PPL, M.EPOCHS_RUN, M.TEST_PPL}


def search(tmp_path, uri, name, *extra, space_text, timeout=600):
    space = tmp_path / f"{name}.yaml"
    space.write_text(textwrap.dedent(space_text))
    return run_cli(
        "search", "--space", space, "--storage", tmp_path / "runs", "--name", name,
        "--tracking-uri", uri, *extra, timeout=timeout, cwd=tmp_path,
    )  # fmt: skip


SPACE = """
    data: synthetic
    seed: 11
    searcher: {type: optuna, sampler: tpe, n_startup_trials: 2}
    scheduler: {type: asha, grace_period: 1, reduction_factor: 3}
    budget: {num_samples: 6, max_concurrent: 2}
    resources: {cpus_per_trial: 1}
    fixed: {epochs: 3, nlayers: 1, emsize: 16, batch_size: 8, bptt: 10, dropout: 0.0,
            max_tokens_per_epoch: 1600}
    parameters:
      nhid: {choice: [8, 32]}
      lr: {loguniform: [0.5, 40.0]}
"""


def wait_for_a_logged_val_ppl(client, name, driver, timeout_s=300):
    """Until a trial of experiment ``name`` has logged val_ppl (the search still running)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert driver.poll() is None, "the search ended before it could be interrupted"
        experiment = client.get_experiment_by_name(name)
        runs = client.search_runs([experiment.experiment_id]) if experiment else []
        if any(M.VAL_PPL in r.data.metrics for r in runs):
            return
        time.sleep(0.3)
    raise AssertionError(f"no val_ppl logged for {name!r} within {timeout_s} s")


def runs_of(client, name):
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get(TAG_KIND) == "search"]
    children = [r for r in runs if r.data.tags.get(TAG_KIND) == "trial"]
    return parents, children


@pytest.mark.slow
def test_search_is_recorded_as_nested_runs_with_checkpoints_and_a_model(tmp_path, mlflow_server):
    # Credentials in the URI (the server ignores them) must never be printed or logged.
    with_credentials = mlflow_server.replace("http://", "http://tuner:s3cr3t-pw@")
    done = search(tmp_path, with_credentials, "tracked", space_text=SPACE)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "s3cr3t" not in done.stdout + done.stderr
    assert "MLflow:" in done.stdout and "call(s) failed" not in done.stdout
    client = MlflowClient(mlflow_server)
    parents, children = runs_of(client, "tracked")
    assert len(parents) == 1 and len(children) == 6
    parent = parents[0]
    assert parent.info.run_name == "tracked" and parent.info.status == "FINISHED"
    for run in [parent, *children]:
        assert "s3cr3t" not in repr(run.data.params) + repr(run.data.tags)
    written = [p for p in (tmp_path / "runs").rglob("*") if p.is_file()]
    assert not [p for p in written if b"s3cr3t" in p.read_bytes()], "credentials written to disk"
    assert parent.data.params["scheduler.type"] == "asha"
    assert parent.data.tags["data.fingerprint"] and parent.data.tags["ray.version"]
    parent_files = {f.path for f in client.list_artifacts(parent.info.run_id, "summary")}
    assert "summary/summary.csv" in parent_files
    statuses = set()
    # Runs a person can tell apart: the searched settings and the trial's number.
    names = [child.info.run_name for child in children]
    assert len(set(names)) == 6 and all(re.fullmatch(r"h(8|32) lr [\d.e+-]+ #\d", n)
                                        for n in names), names  # fmt: skip
    for child in children:
        assert child.data.tags[PARENT_TAG] == parent.info.run_id
        assert child.data.params["nhid"] in ("8", "32") and "lr" in child.data.params
        assert child.info.status in ("FINISHED", "FAILED", "KILLED")
        history = client.get_metric_history(child.info.run_id, M.VAL_PPL)
        steps = [m.step for m in history]
        assert steps == list(range(1, len(steps) + 1))  # one point per evaluation
        for curve in LOGGED_METRICS:  # no stray point (e.g. at step 0) on any curve
            points = [m.step for m in client.get_metric_history(child.info.run_id, curve)]
            assert points == steps, (curve, points, steps)
        assert set(child.data.metrics) <= set(LOGGED_METRICS) | FINAL_METRICS
        assert child.data.metrics[M.BEST_VAL_PPL] == pytest.approx(min(m.value for m in history))
        statuses.add(child.data.tags[TAG_STATUS])
        # The best checkpoint is an artifact that loads (weights_only) into the model.
        local = client.download_artifacts(child.info.run_id, "checkpoints/best", str(tmp_path))
        model, config, vocab = load_model(Path(local) / "model.pt")
        assert config.nhid == int(child.data.params["nhid"]) and len(vocab) > 10
    assert "completed" in statuses and "stopped early by ASHA at epoch 1" in statuses, statuses

    # The registered version comes from the best trial's own run, and explains itself.
    version = client.get_model_version("tune_lm-tracked", "1")
    best_id = parent.data.tags["tune_lm.best_trial_id"]
    best_run = next(c for c in children if c.data.tags["tune_lm.trial_id"] == best_id)
    assert version.run_id == best_run.info.run_id
    assert best_id in version.description and "tracked" in version.description
    assert f"{best_run.data.metrics[M.BEST_VAL_PPL]:.2f}" in version.description
    assert float(version.tags[M.TEST_PPL]) == pytest.approx(
        client.get_run(best_run.info.run_id).data.metrics[M.TEST_PPL], abs=0.01)
    assert best_run.info.status == "FINISHED"  # logging the model left its state alone
    # The search's run says what it was and what it found, in two lines.
    note = parent.data.tags["mlflow.note.content"].splitlines()
    assert len(note) == 2 and note[0].startswith("Search 'tracked' on synthetic"), note
    assert f"Best: trial {best_id}" in note[1] and "models:/tune_lm-tracked/1" in note[1], note
    # The command it suggests names the store (generate would default to ./mlflow.db).
    assert ("best model: models:/tune_lm-tracked/1 (try: python -m tune_lm.generate --model "
            f"models:/tune_lm-tracked/1 --tracking-uri {mlflow_server})") in done.stdout

    # The registered best model reproduces its recorded validation perplexity.
    mlflow.set_tracking_uri(mlflow_server)
    pyfunc = mlflow.pyfunc.load_model("models:/tune_lm-tracked/1")
    corpus_folder = tmp_path / "corpus"
    write_corpus_folder(make_synthetic_corpus(), corpus_folder)
    valid_text = (corpus_folder / "valid.txt").read_text()
    wrapper = pyfunc.unwrap_python_model()
    reproduced = wrapper.perplexity(valid_text)
    best_val = client.get_run(parent.info.run_id).data.metrics["best_val_ppl"]
    # predict() reads a text as one stream; the search scored eval_batch_size columns,
    # each from a zero state: the same weights, nearly the same number.
    assert reproduced == pytest.approx(best_val, rel=0.02)
    synthetic = make_synthetic_corpus()
    assert list(synthetic.vocab) == list(wrapper.vocab)
    one_stream = EvalSplit(synthetic.valid, 1, synthetic.vocab.index("<eos>"), torch.device("cpu"))
    loss = evaluate_loss(wrapper.model, one_stream, wrapper.config.bptt)
    assert reproduced == pytest.approx(M.perplexity(loss), rel=1e-6)
    assert torch.isfinite(torch.tensor(reproduced))


@pytest.mark.slow
def test_search_finishes_when_the_tracking_server_goes_away(tmp_path, private_mlflow_server):
    """A second, private server is stopped once the first result is logged."""
    server, uri = private_mlflow_server
    space = tmp_path / "doomed.yaml"
    space.write_text(textwrap.dedent(SPACE.replace("max_tokens_per_epoch: 1600",
                                                   "max_tokens_per_epoch: 8000")))  # fmt: skip
    try:
        driver = start_cli("search", "--space", str(space), "--storage", str(tmp_path / "runs"),
                           "--name", "doomed", "--tracking-uri", uri, cwd=tmp_path,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True)  # fmt: skip
        client = MlflowClient(uri)
        wait_for_a_logged_val_ppl(client, "doomed", driver)
    finally:
        stop_process(server, signal.SIGKILL)
    output, _ = driver.communicate(timeout=600)
    assert driver.returncode == 0, output[-3000:]
    assert "call(s) failed; not logged" in output
    rows = (tmp_path / "runs" / "doomed" / "summary.csv").read_text().splitlines()
    assert len(rows) == 1 + 6  # every trial trained and summarised all the same


def test_a_search_that_ends_abruptly_leaves_none_of_its_runs_running(tmp_path):
    """end_parent_run after a failure or a Ctrl-C Tune's graceful stop did not take (a
    second one during that stop, or one while results are recorded): the search's run and
    its trials' runs still open end KILLED (FAILED); finished ones and other searches'
    runs stay as they are."""
    from tune_lm.tracking.parent_run import end_parent_run
    from tune_lm.tracking.tags import PARENT_TAG

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id = client.create_experiment("abrupt")
    parent, other = (client.create_run(experiment_id).info.run_id for _ in range(2))
    open_child, done_child, others_child = (
        client.create_run(experiment_id, tags={PARENT_TAG: p}).info.run_id
        for p in (parent, parent, other))  # fmt: skip
    client.set_terminated(done_child, "FINISHED")
    for killed, status in ((True, "KILLED"), (False, "FAILED")):
        end_parent_run(client, parent, killed=killed)
        states = {run: client.get_run(run).info.status
                  for run in (parent, open_child, done_child, other, others_child)}  # fmt: skip
        assert states == {parent: status, open_child: status, done_child: "FINISHED",
                          other: "RUNNING", others_child: "RUNNING"}, states  # fmt: skip
        for run in (parent, open_child):  # open again, for the FAILED round
            client.update_run(run, "RUNNING")


def test_only_an_unreachable_store_pauses_logging_and_open_runs_end_killed(tmp_path):
    """A local error (a checkpoint file gone) is logged as what it is and the next call
    runs; a network error pauses the calls (a server that is down would cost each its
    timeout). After an interruption, the runs Tune never reported finished end KILLED."""
    from types import SimpleNamespace

    import requests
    from mlflow.exceptions import MlflowException

    from tune_lm.tracking.trial_runs import MLflowTrialLogger, unreachable
    from tune_lm.tuning.space import SearchSpace

    wrapped = MlflowException("API request to http://127.0.0.1:5/api failed with exception "
                              "HTTPConnectionPool(host='127.0.0.1', port=5): Max retries exceeded")
    assert unreachable(wrapped) and unreachable(requests.ConnectionError("refused"))
    assert not unreachable(FileNotFoundError(2, "No such file", "train_state.pt"))
    assert not unreachable(MlflowException("Invalid metric value"))

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("e")
    parent = client.create_run(experiment_id).info.run_id
    space = SearchSpace.model_validate({"data": "synthetic",
                                        "parameters": {"lr": {"loguniform": [1.0, 20.0]}}})
    logger = MLflowTrialLogger(uri, experiment_id, parent, space, ("a", "b"))

    def gone():
        raise FileNotFoundError(2, "No such file", "train_state.pt")

    assert logger._safe("read the checkpoint", gone) is None
    assert logger._safe("list experiments", client.search_experiments)  # not skipped
    assert logger.failures == ["read the checkpoint: FileNotFoundError: [Errno 2] No such "
                               "file: 'train_state.pt'"]
    logger._safe("log", lambda: (_ for _ in ()).throw(requests.ConnectionError("refused")))
    assert logger._safe("list experiments", client.search_experiments) is None  # paused
    assert logger.failures[-1].endswith("skipped, the tracking server was unreachable")

    logger._paused_until = 0.0
    trials = [SimpleNamespace(trial_id=f"t{lr}", config={"lr": lr}, last_result={},
                              checkpoint=None) for lr in (2.0, 3.0)]  # fmt: skip
    for trial in trials:
        logger.on_trial_start(0, trials, trial)
    logger.on_trial_complete(0, trials, trials[0])
    logger.end_open_runs("stopped by Ctrl-C; --resume continues it")
    runs = {r.data.tags["tune_lm.trial_id"]: r for r in client.search_runs([experiment_id])
            if "tune_lm.trial_id" in r.data.tags}  # fmt: skip
    assert runs["t2.0"].info.status == "FINISHED"
    assert runs["t3.0"].info.status == "KILLED"
    assert runs["t3.0"].data.tags[TAG_STATUS] == "stopped by Ctrl-C; --resume continues it"


def test_a_new_search_does_not_join_the_mlflow_experiment_of_a_search_kept_elsewhere(tmp_path):
    """Two searches of one name from two folders shared one MLflow experiment: its runs,
    its report --mlflow (which read only the latest) and its model's versions."""
    from tune_lm.lm.errors import ConfigError
    from tune_lm.tracking.parent_run import check_name_free
    from tune_lm.tracking.tags import TAG_PATH

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("same")
    client.create_run(experiment_id, tags={TAG_KIND: "search", TAG_PATH: "/a/runs/same"})
    client.create_run(experiment_id, tags={TAG_KIND: "trial", TAG_PATH: "/b/runs/same"})
    check_name_free(uri, "same", "/a/runs/same")  # itself again (its folder was removed)
    check_name_free(uri, "other", "/b/runs/other")
    with pytest.raises(ConfigError, match="MLflow experiment 'same' in .* already holds the "
                                          "search at /a/runs/same: .* from /b/runs/same"):
        check_name_free(uri, "same", "/b/runs/same")
