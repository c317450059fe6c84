"""Every file in cluster/ is valid: launcher YAMLs against Ray's own cluster-config
schema, Kubernetes manifests for the fields KubeRay and Kubernetes require."""

from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER = Path(__file__).resolve().parents[1] / "cluster"
LAUNCHER = ["aws.yaml", "onprem.yaml"]


def test_every_cluster_file_is_checked_here():
    files = {p.name for p in CLUSTER.glob("*.yaml")}
    assert files == {*LAUNCHER, "kuberay.yaml"}


@pytest.mark.parametrize("name", LAUNCHER)
def test_launcher_config_matches_rays_schema(name):
    config = yaml.safe_load((CLUSTER / name).read_text())
    config = prepare_config(config)  # defaults filled as `ray up` does, offline
    validate_config(config)  # raises on anything the cluster launcher would reject
    head = "\n".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head  # nothing reachable from outside
    assert "mlflow server --host 127.0.0.1" in head
    assert "RAY_AUTH_MODE=token" in head  # token authentication stays on
    assert "~/.ray/auth_token" in config["file_mounts"]
    assert any("requirements-lock.txt" in c for c in config["setup_commands"])


def test_launcher_schema_check_can_fail():
    config = yaml.safe_load((CLUSTER / "aws.yaml").read_text())
    config["max_wrkers"] = 3
    with pytest.raises(Exception, match="max_wrkers"):  # jsonschema's ValidationError
        validate_config(prepare_config(config))


def test_kuberay_manifests_have_the_required_fields():
    documents = [d for d in yaml.safe_load_all((CLUSTER / "kuberay.yaml").read_text()) if d]
    by_kind = {d["kind"]: d for d in documents}
    assert set(by_kind) == {"Deployment", "Service", "RayJob"}
    for document in documents:
        assert document["apiVersion"] and document["metadata"]["name"]
    job = by_kind["RayJob"]
    assert job["apiVersion"] == "ray.io/v1"
    assert "python -m tune_lm.search" in job["spec"]["entrypoint"]
    cluster = job["spec"]["rayClusterSpec"]
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["dashboard-host"] == "127.0.0.1"
    assert head["template"]["spec"]["containers"][0]["image"]
    workers = cluster["workerGroupSpecs"][0]
    limits = workers["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert "nvidia.com/gpu" in limits
    env = {e["name"] for e in head["template"]["spec"]["containers"][0]["env"]}
    assert {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN"} <= env
    service, deployment = by_kind["Service"], by_kind["Deployment"]
    assert service["spec"]["type"] == "ClusterIP"  # reached by port-forward only
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["metadata"]["name"] in job["spec"]["entrypoint"]
