"""Uses of Ray's private or undocumented surfaces, kept in one place.

Each one here has a canary test (tests/test_private_api.py) that fails loudly when a Ray
upgrade changes it. (Older uses elsewhere are to move here with the layered redesign.)
"""

from __future__ import annotations


def find_cluster_address() -> str:
    """The ``host:port`` that ``ray.init(address="auto")`` would dial: RAY_ADDRESS, else the
    cluster the last ``ray start`` on this machine recorded (its file survives the cluster,
    so the address may be dead), else a running GCS process found on this machine.

    Raises ConnectionError when there is none."""
    from ray._private.services import canonicalize_bootstrap_address

    address = canonicalize_bootstrap_address("auto")
    if not address:
        raise ConnectionError("no running Ray cluster was found on this machine")
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
