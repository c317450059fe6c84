"""Uses of Ray's private or undocumented surfaces, kept in one place.

Each one here has a canary test (tests/test_private_api.py) that fails loudly when a Ray
upgrade changes it. (Older uses elsewhere are to move here with the layered redesign.)
"""

from __future__ import annotations

from pathlib import Path


def find_cluster_address() -> str:
    """The cluster ``--address auto`` means: RAY_ADDRESS, else the one the last
    ``ray start`` on this machine recorded in Ray's temp folder (the record outlives the
    cluster, so the address may be dead: the caller checks it).

    Unlike ``ray.init(address="auto")`` this never picks some Ray process it finds running
    on the machine. Raises ConnectionError when there is no cluster to name."""
    import os

    from ray._private.utils import read_ray_address

    address = os.environ.get("RAY_ADDRESS") or read_ray_address()
    if not address or address in ("auto", "local"):
        raise ConnectionError("no RAY_ADDRESS, and no cluster recorded by `ray start`")
    return address


def token_auth_enabled() -> bool:
    """Whether this process's Ray requires its token on every gRPC call."""
    from ray._private.authentication.authentication_utils import is_token_auth_enabled

    return bool(is_token_auth_enabled())


def require_token_auth() -> None:
    """Token authentication on for the Ray this process starts next, even where the
    shell's RAY_AUTH_MODE turned it off (Ray caches its config, so it is refreshed)."""
    import os

    from ray._private.authentication.authentication_token_setup import _enable_token_auth

    if os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
        _enable_token_auth()


def tune_state_saved(experiment_dir: Path) -> bool:
    """Whether Tune has written its experiment state (``experiment_state-*.json``, its
    own file naming) into a local experiment folder: before that, ``tuner.pkl`` alone
    makes the folder look restorable while Tune cannot restore it."""
    return any(experiment_dir.glob("experiment_state-*.json"))
