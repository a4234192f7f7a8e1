"""The Helm chart in deploy/kubernetes/: linted and rendered by a real helm (v4), every rendered object validated
offline against the schemas of Kubernetes `KUBERNETES_VERSION` (kubernetes-validate, strict: unknown fields fail),
custom resources against their upstream CRDs (vendored in `crds/`, see `crds/NOTICE.md`). An object without a
schema fails the check, and deliberately broken values fail it too. No cluster runs here (docs/kubernetes.md).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "kubernetes" / "attnserve"
CRDS = Path(__file__).parent / "crds"
KUBERNETES_VERSION = "1.33.0"
NGC_RELEASE = "24.10"  # the compose file's release (tests/serving/test_compose.py)


class NoSchemaError(AssertionError):
    """An object the check has no schema for: a failure, never a pass."""


@cache
def helm() -> str:
    """The helm binary `make setup` installs into the venv (deploy/kubernetes/install_helm.sh), else PATH's."""
    candidate = Path(sys.executable).parent / "helm"
    found = str(candidate) if candidate.is_file() else shutil.which("helm")
    if found is None:
        message = "helm is not installed: run `bash deploy/kubernetes/install_helm.sh .venv` (make setup does)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    return found


@cache
def render(*sets: str) -> list[dict[str, Any]]:
    """`helm template` of the chart with `--set` values, as a list of objects (cached: do not mutate)."""
    command = [helm(), "template", "attnserve", str(CHART), "--namespace", "inference"]
    command += ["--kube-version", KUBERNETES_VERSION]
    for value in sets:
        command += ["--set", value]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def _strict(schema: Any) -> Any:
    """A CRD's openAPIV3Schema with unknown fields refused (what `kubectl apply --validate=strict` does)."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    return schema


@cache
def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> strict schema, from every vendored CRD file."""
    schemas = {}
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: 6 s instead of 30 s for the 2 MB of CRDs
    for path in sorted(CRDS.glob("*.yaml")):
        crd = yaml.load(path.read_text(), Loader=loader)
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schemas[(f"{group}/{version['name']}", kind)] = _strict(version["schema"]["openAPIV3Schema"])
    return schemas


def _kubernetes_validate() -> Any:
    """The `kubernetes-validate` package (test extra); skipped when missing, except under CI."""
    try:
        import kubernetes_validate
    except ImportError:
        message = "kubernetes-validate is not installed: pip install -e '.[test]' (make setup does)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    return kubernetes_validate


def validate(obj: dict[str, Any]) -> None:
    """Strict schema validation of one object; raises on an invalid object and on one without a schema."""
    kubernetes_validate = _kubernetes_validate()

    key = (obj["apiVersion"], obj["kind"])
    if key in crd_schemas():
        jsonschema.Draft7Validator(crd_schemas()[key]).validate(obj)
        return
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError as exc:
        raise NoSchemaError(str(exc)) from exc


def test_helm_lint_is_clean() -> None:
    result = subprocess.run(
        [helm(), "lint", "--strict", str(CHART), "--kube-version", KUBERNETES_VERSION],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("mode", "kinds"),
    [
        (
            "deployment",
            {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "ServiceMonitor", "ConfigMap"},
        ),
        ("kserve", {"ServingRuntime", "InferenceService", "ConfigMap"}),
    ],
)
def test_rendered_objects_pass_strict_schema_validation(mode: str, kinds: set[str]) -> None:
    objects = render(f"mode={mode}")
    assert {obj["kind"] for obj in objects} == kinds
    for obj in objects:
        validate(obj)


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("triton.ports.http=not-a-port", "Deployment"),  # containerPort must be an integer
        ("podDisruptionBudget.minAvailable=1.5", "PodDisruptionBudget"),  # int or string, not a float
        ("serviceMonitor.interval=every minute", "ServiceMonitor"),  # the CRD's duration pattern
    ],
)
def test_a_broken_value_fails_the_same_check(value: str, kind: str) -> None:
    broken = next(obj for obj in render(value) if obj["kind"] == kind)
    with pytest.raises(jsonschema.ValidationError):
        validate(broken)


def test_kserve_custom_resources_with_a_broken_value_fail() -> None:
    objects = {obj["kind"]: obj for obj in render("mode=kserve")}
    runtime = json.loads(json.dumps(objects["ServingRuntime"]))
    runtime["spec"]["protocolVersion"] = ["v2"]  # a misspelt field (the CRD says protocolVersions): refused
    service = json.loads(json.dumps(objects["InferenceService"]))
    service["spec"]["predictor"]["minReplicas"] = "two"
    for broken in (runtime, service):
        with pytest.raises(jsonschema.ValidationError):
            validate(broken)


def test_an_object_without_a_schema_is_a_failure() -> None:
    unknown = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    with pytest.raises(NoSchemaError):
        validate(unknown)
    core_unknown = {"apiVersion": "v1", "kind": "Widget", "metadata": {"name": "w"}}
    with pytest.raises(NoSchemaError):
        validate(core_unknown)


def test_values_args_are_generated_from_the_serving_flags() -> None:
    from attnserve.serving.flags import kserve_args, kubernetes_args

    check = subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "kubernetes" / "sync_values.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stderr
    deployment = next(obj for obj in render() if obj["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == kubernetes_args()
    assert container["image"] == f"attnserve-triton:{NGC_RELEASE}"
    runtime = next(obj for obj in render("mode=kserve") if obj["kind"] == "ServingRuntime")
    assert runtime["spec"]["containers"][0]["args"] == kserve_args()
    assert set(runtime["spec"]["protocolVersions"]) == {"v2", "grpc-v2"}
    # the token is never a literal: Kubernetes expands $(ATTNSERVE_ADMIN_TOKEN) from the Secret-backed variable
    restricted = [a for a in container["args"] if "restricted" in a]
    assert len(restricted) == 2 and all(a.endswith("=$(ATTNSERVE_ADMIN_TOKEN)") for a in restricted)
    assert container["env"][0]["valueFrom"]["secretKeyRef"]["name"] == "attnserve-admin-token"


def test_object_storage_repository_replaces_the_volume() -> None:
    deployment = next(obj for obj in render("modelRepository.uri=s3://bucket/repo") if obj["kind"] == "Deployment")
    spec = deployment["spec"]["template"]["spec"]
    assert "--model-repository=s3://bucket/repo" in spec["containers"][0]["args"]
    assert [v["name"] for v in spec["volumes"]] == ["dshm"]


def test_probes_gpu_services_and_autoscaling() -> None:
    objects = render()
    deployment = next(obj for obj in objects if obj["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    services = {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == "Service"}
    main = services["attnserve"]
    assert {p["name"]: p["port"] for p in main["spec"]["ports"]} == {"http": 8000, "grpc": 8001, "metrics": 8002}
    assert services["attnserve-grpc-headless"]["spec"]["clusterIP"] == "None"
    hpa = next(obj for obj in objects if obj["kind"] == "HorizontalPodAutoscaler")
    adapter = yaml.safe_load((ROOT / "deploy" / "kubernetes" / "prometheus-adapter-values.yaml").read_text())
    rule = adapter["rules"]["custom"][0]
    metric = hpa["spec"]["metrics"][0]["pods"]
    assert metric["metric"]["name"] == rule["name"]["as"] == "avg_time_queue_us"
    assert "spec" in deployment and "replicas" not in deployment["spec"]  # the HPA owns the count
    monitor = next(obj for obj in objects if obj["kind"] == "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"


@pytest.mark.triton
def test_dashboard_and_hpa_query_use_metric_names_triton_exports(triton_server) -> None:
    import urllib.request

    with urllib.request.urlopen(triton_server.metrics_url, timeout=10) as response:
        exported = set(re.findall(r"^(nv_[a-z_]+)", response.read().decode(), flags=re.MULTILINE))
    dashboard = (CHART / "dashboards" / "triton.json").read_text()
    adapter = (ROOT / "deploy" / "kubernetes" / "prometheus-adapter-values.yaml").read_text()
    used = set(re.findall(r"\bnv_[a-z_]+", dashboard + adapter))
    gpu_only = {name for name in used if name.startswith("nv_gpu_")}  # exported only where a GPU is visible
    assert used - gpu_only and used - gpu_only <= exported, sorted(used - gpu_only - exported)
    panels = {panel["title"] for panel in json.loads(dashboard)["panels"]}
    for needed in ("Throughput", "Queue time", "Compute time", "batch size", "Failed"):
        assert any(needed.lower() in title.lower() for title in panels), needed


def test_in_cluster_edge_is_the_generated_haproxy_config_and_haproxy_accepts_it(tmp_path: Path) -> None:
    from attnserve.serving.haproxy import KUBERNETES_DNS_ENV

    objects = render()
    config_map = next(o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "attnserve-edge")
    generated = (CHART / "files" / "haproxy.cfg").read_text()
    assert config_map["data"]["haproxy.cfg"] == generated.rstrip("\n")  # sync_values.py --check keeps it current
    assert "server-template replica 1-16" in generated and "proto h2" in generated
    binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not Path(binary).is_file():
        message = "haproxy is not installed (Debian package haproxy; .ci/run installs it)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    path = tmp_path / "haproxy.cfg"
    path.write_text(generated)
    env = dict(os.environ, **{KUBERNETES_DNS_ENV: "localhost"})
    check = subprocess.run([binary, "-c", "-f", str(path)], capture_output=True, text=True, env=env, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    # the edge's pods are never selected as Triton pods (the headless Service would send HAProxy to itself)
    deployments = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Deployment"}
    triton_selector = deployments["attnserve"]["spec"]["selector"]["matchLabels"]
    edge_labels = deployments["attnserve-edge"]["spec"]["template"]["metadata"]["labels"]
    assert not triton_selector.items() <= edge_labels.items()
    for service in (o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] != "attnserve-edge"):
        assert service["spec"]["selector"]["app.kubernetes.io/component"] == "triton"
    edge_env = deployments["attnserve-edge"]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert edge_env == [{"name": KUBERNETES_DNS_ENV, "value": "attnserve-grpc-headless.inference.svc.cluster.local"}]
