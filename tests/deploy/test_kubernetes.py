"""deploy/kubernetes/: every object checked against the Kubernetes API's own schemas
(kubernetes-validate, strict: unknown fields refused), then what the objects must say for
a drain to lose nothing: probes, preStop, a grace period above the drain, resources."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from ffserve.config import Config
from ffserve.service.server import CLOSE_GRACE_S, stop_grace

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = sorted((REPO / "deploy" / "kubernetes").glob("*.yaml"))
# The oldest version with every field used (appArmorProfile, hostUsers with procMount).
KUBERNETES = "1.30.0"


def load(name: str) -> dict[str, Any]:
    (doc,) = yaml.safe_load_all((REPO / "deploy" / "kubernetes" / name).read_text())
    assert isinstance(doc, dict)
    return doc


def pod_spec() -> dict[str, Any]:
    spec: dict[str, Any] = load("deployment.yaml")["spec"]["template"]["spec"]
    return spec


@pytest.mark.parametrize("version", [KUBERNETES, "1.33.0"])
@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifests_follow_the_kubernetes_schema(path: Path, version: str) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_schema_check_bites() -> None:
    deployment = load("deployment.yaml")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readynessProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES, strict=True)


def test_probes_ask_ready_and_health_on_the_http_port() -> None:
    (container,) = pod_spec()["containers"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    config = Config.load(REPO / "config.toml").server
    assert ports == {"ws": config.port, "http": config.http_port}
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}


def test_the_grace_period_outlasts_prestop_and_the_drain() -> None:
    spec = pod_spec()
    (container,) = spec["containers"]
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    config = Config.load(REPO / "config.toml")
    drain = config.server.drain_timeout_s
    longest = float(command[1]) + drain + stop_grace(config) + CLOSE_GRACE_S
    assert spec["terminationGracePeriodSeconds"] > longest


def test_resources_and_the_jwt_key_where_the_image_looks() -> None:
    spec = pod_spec()
    (container,) = spec["containers"]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind])
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    (item,) = volumes["jwt"]["secret"]["items"]
    key_path = f"{mounts['jwt']}/{item['path']}"
    assert f"FFSERVE_AUTH_SECRET_FILE={key_path}" in (REPO / "Containerfile").read_text()
    env = {e["name"]: e["value"] for e in container["env"]}
    assert mounts["jobs"] == env["FFSERVE_STORAGE_TEMP_DIR"]


def test_the_service_exposes_the_websocket_port_of_the_deployment_only() -> None:
    service = load("service.yaml")
    labels = load("deployment.yaml")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"] == labels
    assert [port["targetPort"] for port in service["spec"]["ports"]] == ["ws"]
