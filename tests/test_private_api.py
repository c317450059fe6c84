"""Canaries for the private Ray surfaces tune_lm uses (tune_lm/tuning/private_api.py): each fails
loudly when a Ray upgrade moves or changes one."""

from pathlib import Path

import pytest

from tune_lm.tuning.private_api import find_cluster_address


def test_auto_finds_the_cluster_recorded_by_the_last_ray_start(tmp_path, monkeypatch):
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "ray_current_cluster").write_text("127.0.0.1:6399")
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    assert find_cluster_address() == "127.0.0.1:6399"


def test_auto_without_any_record_raises_connection_error(tmp_path, monkeypatch):
    """Even while other Ray processes run on the machine: auto is never a guess."""
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    with pytest.raises(ConnectionError):
        find_cluster_address()


def test_ray_address_wins_over_the_recorded_cluster(tmp_path, monkeypatch):
    (Path(tmp_path) / "ray").mkdir()
    (tmp_path / "ray" / "ray_current_cluster").write_text("127.0.0.1:6399")
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:7000")
    assert find_cluster_address() == "127.0.0.1:7000"


def test_tune_names_its_state_file_as_we_look_for_it(asha_search):
    """A finished real search has Tune's experiment_state-*.json; an empty folder has not."""
    from tune_lm.tuning.private_api import tune_state_saved

    done, folder = asha_search
    assert done.returncode == 0, done.stderr[-2000:]
    assert tune_state_saved(folder)
    assert not tune_state_saved(folder / "nothing-here")
