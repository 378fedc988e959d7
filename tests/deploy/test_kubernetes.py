"""deploy/kubernetes: the base and the example overlay, rendered (tests/deploy/kustomize.py) and validated
offline against the Kubernetes schemas that kubernetes-validate bundles (strict: unknown fields are
errors) and the ServiceMonitor CRD's schema; then what the deployment relies on, checked by name."""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path

import jsonschema
import kubernetes_validate.utils as kubernetes
import pytest
import yaml

from plexline.settings import ROLES, env_var
from tests.deploy.kustomize import build

ROOT = Path(__file__).parents[2]
KUBE = ROOT / "deploy" / "kubernetes"
OVERLAY = KUBE / "overlays" / "example"
VERSIONS = ("1.29.0", "1.37.0")  # the oldest Kubernetes still common in clouds, and the newest bundled
SCHEMAS = Path(__file__).parent / "schemas"


def strict(schema: object) -> object:
    """Unknown fields are errors, as kubernetes-validate's strict schemas make them."""
    if isinstance(schema, dict):
        schema = {k: strict(v) for k, v in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
        return schema
    return [strict(v) for v in schema] if isinstance(schema, list) else schema


CUSTOM = {("monitoring.coreos.com/v1", "ServiceMonitor"):
          strict(json.loads((SCHEMAS / "servicemonitor-v1.json").read_text()))}


def validate(obj: dict, version: str) -> None:
    custom = CUSTOM.get((obj["apiVersion"], obj["kind"]))
    if custom is not None:
        jsonschema.validate(obj, custom)
    else:
        kubernetes.validate(obj, version, strict=True)  # raises SchemaNotFoundError for a kind it lacks


@pytest.fixture(scope="module")
def rendered() -> list[dict]:
    return build(OVERLAY)


def find(objects: list[dict], kind: str, name: str) -> dict:
    [obj] = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return obj


def pod(objects: list[dict], name: str) -> dict:
    return find(objects, "Deployment", name)["spec"]["template"]["spec"]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("folder", ["overlays/example", "base", "redis", "monitoring"])
def test_every_object_is_valid_kubernetes(folder, version):
    objects = build(KUBE / folder)

    assert objects
    for obj in objects:
        validate(obj, version)


def test_the_validation_finds_a_misspelt_field_and_a_wrong_type(rendered):
    worker = copy.deepcopy(find(rendered, "Deployment", "plexline-worker"))
    container = worker["spec"]["template"]["spec"]["containers"][0]
    container["lifecyle"] = container.pop("lifecycle")
    with pytest.raises(kubernetes.ValidationError, match="lifecyle"):
        validate(worker, VERSIONS[-1])

    monitor = copy.deepcopy(find(rendered, "ServiceMonitor", "plexline-worker"))
    monitor["spec"]["endpoints"][0]["interval"] = 10
    with pytest.raises(jsonschema.ValidationError):
        validate(monitor, VERSIONS[-1])


def test_everything_lands_in_the_overlays_namespace_with_its_image(rendered):
    namespaced = [o for o in rendered if o["kind"] != "Namespace"]

    assert {o["metadata"]["namespace"] for o in namespaced} == {"plexline"}
    images = {c["image"] for o in rendered if o["kind"] in ("Deployment", "StatefulSet")
              for c in o["spec"]["template"]["spec"]["containers"] + o["spec"]["template"]["spec"].get(
                  "initContainers", [])}
    assert images == {"registry.example.com/plexline:0.1.0", "redis:7.4"}


def test_control_planes_are_redundant_behind_sip_over_udp_and_tcp(rendered):
    plane = find(rendered, "Deployment", "plexline-control-plane")
    sip = find(rendered, "Service", "plexline-sip")

    assert plane["spec"]["replicas"] >= 2
    assert {(p["port"], p["protocol"]) for p in sip["spec"]["ports"]} == {(5060, "UDP"), (5060, "TCP")}
    assert sip["spec"]["externalTrafficPolicy"] == "Local"  # trust by source network sees the trunk's address
    assert sip["spec"]["selector"].items() <= plane["spec"]["template"]["metadata"]["labels"].items()


def test_control_planes_drain_their_sip_calls_before_they_stop(rendered):
    spec = pod(rendered, "plexline-control-plane")
    [container] = spec["containers"]
    env = {e["name"]: e for e in container["env"]}
    settle = float(container["lifecycle"]["preStop"]["exec"]["command"][-1])  # the Service forgets the pod
    drain = float(env["PLEXLINE_SIP_DRAIN_TIMEOUT"]["value"])
    max_call = max(float(t["limits"]["max_call_seconds"]) for t in _tenants(rendered))
    assert max_call <= drain and settle + drain < spec["terminationGracePeriodSeconds"]  # SIGKILL after the drain


def test_workers_take_a_gpu_each_reach_callers_and_drain_before_they_stop(rendered):
    spec = pod(rendered, "plexline-worker")
    [container] = spec["containers"]
    env = {e["name"]: e for e in container["env"]}

    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert spec["hostNetwork"] and spec["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert env["PLEXLINE_MEDIA_HOST"]["value"] == "$(NODE_ADDRESS)"
    assert env["NODE_ADDRESS"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    drain = container["lifecycle"]["preStop"]["exec"]["command"]
    assert drain[:2] == ["plexline", "drain"]
    waits = float(drain[drain.index("--wait") + 1])
    max_call = max(float(t["limits"]["max_call_seconds"]) for t in _tenants(rendered))
    assert max_call <= waits < spec["terminationGracePeriodSeconds"]  # a call ends before the pod is killed


def test_the_autoscaler_scales_the_workers_on_the_adapters_metric(rendered):
    hpa = find(rendered, "HorizontalPodAutoscaler", "plexline-worker")
    adapter = (KUBE / "monitoring" / "prometheus-adapter-values.yaml").read_text()

    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "plexline-worker"}
    [metric] = hpa["spec"]["metrics"]
    assert metric["external"]["metric"]["name"] == "plexline_slots_wanted"
    assert "as: plexline_slots_wanted" in adapter and 'plexline_engine_slots{state="used"' in adapter
    assert hpa["spec"]["maxReplicas"] == 4  # the overlay's patch


def test_the_scrapers_find_the_ports_they_name(rendered):
    for component in ("control-plane", "worker"):
        monitor = find(rendered, "ServiceMonitor", f"plexline-{component}")
        services = [s for s in rendered if s["kind"] == "Service"
                    and monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()]
        ports = {p["name"] for s in services for p in s["spec"]["ports"]}
        assert monitor["spec"]["endpoints"][0]["port"] in ports
    annotations = find(rendered, "Deployment", "plexline-worker")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == "8081"


def test_every_config_map_and_secret_used_exists_or_is_the_documented_one(rendered):
    defined = {(o["kind"], o["metadata"]["name"]) for o in rendered if o["kind"] in ("ConfigMap", "Secret")}
    used = set()
    for obj in rendered:
        _collect_references(obj, used)

    assert used - defined == {("Secret", "plexline-secrets")}  # made out of band (docs/deployment.md)


def test_only_settings_plexline_knows_are_set(rendered):
    known = {env_var(cls, name) for classes in ROLES.values() for cls in classes for name in cls.model_fields}
    config = find(rendered, "ConfigMap", "plexline-config")["data"]
    names = set(config) | {e["name"] for name in ("plexline-control-plane", "plexline-worker")
                           for e in pod(rendered, name)["containers"][0]["env"]}

    assert {n for n in names if n.startswith("PLEXLINE_")} - known == set()
    assert config["PLEXLINE_SIP_ADVERTISED_HOST"] == "203.0.113.10"  # the overlay's strategic merge


def test_the_tenants_are_mounted_where_the_settings_look(rendered):
    config = find(rendered, "ConfigMap", "plexline-config")["data"]
    for name in ("plexline-control-plane", "plexline-worker"):
        spec = pod(rendered, name)
        [mount] = [m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "tenants"]
        [volume] = [v for v in spec["volumes"] if v["name"] == "tenants"]
        paths = {i["path"] for source in volume["projected"]["sources"] for kind in source.values()
                 for i in kind["items"]}
        assert mount["mountPath"] == config["PLEXLINE_PERSONAS_DIR"] == config["PLEXLINE_VOICES_DIR"]
        assert paths == {"acme/tenant.yaml", "acme/support.yaml"}


def _tenants(objects: list[dict]) -> list[dict]:
    return [yaml.safe_load(base64.b64decode(v)) for o in objects if o["kind"] == "Secret"
            for k, v in o["data"].items() if k == "tenant.yaml"]


def _collect_references(node: object, used: set) -> None:
    if isinstance(node, dict):
        for key, kind in (("configMapRef", "ConfigMap"), ("configMapKeyRef", "ConfigMap"), ("configMap", "ConfigMap"),
                          ("secretRef", "Secret"), ("secretKeyRef", "Secret"), ("secret", "Secret"),
                          ("credentials", "Secret")):
            ref = node.get(key)
            if isinstance(ref, dict):
                used.add((kind, ref.get("name") or ref.get("secretName")))
        for value in node.values():
            _collect_references(value, used)
    elif isinstance(node, list):
        for value in node:
            _collect_references(value, used)
