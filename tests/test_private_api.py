"""Canaries for the private Ray surfaces tune_lm uses (tune_lm/private_api.py): each fails
loudly when a Ray upgrade moves or changes one."""

from pathlib import Path

import pytest

from tune_lm.private_api import find_cluster_address


def test_auto_finds_the_cluster_recorded_by_the_last_ray_start(tmp_path, monkeypatch):
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "ray_current_cluster").write_text("127.0.0.1:6399")
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    assert find_cluster_address() in (f"{host}:6399" for host in this_host())


def test_auto_without_any_cluster_raises_connection_error(tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    with pytest.raises(ConnectionError):
        find_cluster_address()


def test_ray_address_wins_over_the_recorded_cluster(tmp_path, monkeypatch):
    (Path(tmp_path) / "ray").mkdir()
    (tmp_path / "ray" / "ray_current_cluster").write_text("127.0.0.1:6399")
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:7000")
    assert find_cluster_address() in (f"{host}:7000" for host in this_host())


def this_host():
    """Ray rewrites 127.0.0.1 to this node's own IP address."""
    import ray

    return ("127.0.0.1", ray.util.get_node_ip_address())
