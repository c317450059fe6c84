"""What a local search exposes on the network: Ray's gRPC servers listen on every
interface (Ray has no option to bind them to loopback), so token authentication must be
on; nothing else of tune_lm's (no dashboard, no Ray Client server, no MLflow) may listen
beyond 127.0.0.1."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import REPO_ROOT

# It starts a real local Ray in a subprocess (seconds): not in the fast tier.
pytestmark = pytest.mark.slow

PROBE = """
import json, subprocess
from tune_lm.tuning.tuner import connect_ray
from tune_lm.tuning.private_api import token_auth_enabled
connect_ray(None)
listening = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout
print(json.dumps({"token_auth": token_auth_enabled(), "ss": listening}))
"""
# Ray's own processes: the GCS, the raylet, its workers and agents, and the driver's core
# worker (this python process).
RAY_PROCESSES = ("gcs_server", "raylet", "ray::", "python", "default_worker")


def test_a_local_ray_has_token_auth_and_no_avoidable_public_listener(tmp_path):
    ray_tmp = tempfile.mkdtemp(prefix="rx", dir="/tmp")  # short: Ray's socket paths
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "HOME": str(tmp_path),
           "RAY_AUTH_MODE": "disabled"}  # a shell that turned it off: the search turns it on
    try:
        done = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO_ROOT, env=env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
    finally:
        subprocess.run(["pkill", "-9", "-f", ray_tmp], capture_output=True)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["token_auth"] is True
    assert (Path(tmp_path) / ".ray" / "auth_token").is_file()
    public = []
    for line in found["ss"].splitlines():
        fields = line.split()
        local, owner = fields[3], fields[-1] if "users:" in fields[-1] else ""
        if local.startswith(("127.", "[::1]", "[::ffff:127.")):
            continue
        public.append((local, owner))
    ours = [(local, owner) for local, owner in public
            if any(f'"{name}' in owner for name in RAY_PROCESSES)]  # fmt: skip
    assert ours, public  # Ray's gRPC servers (if this fails, Ray learnt to bind loopback)
    others = [p for p in public if p not in ours and "pid=" in p[1]]
    started_here = [p for p in others if any(
        name in p[1] for name in ("dashboard", "mlflow", "ray_client", "client_server"))]
    assert not started_here, started_here
