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
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from support.binaries import require_binary

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "kubernetes" / "attnserve"
CRDS = Path(__file__).parent / "crds"
KUBERNETES_VERSION = "1.33.0"
NGC_RELEASE = "24.10"  # the compose file's release (tests/serving/test_compose.py)


class NoSchemaError(AssertionError):
    """An object the check has no schema for: a failure, never a pass."""


KSERVE_URI = "kserve.storageUri=s3://models/attnserve"
VARIANTS: dict[str, tuple[str, ...]] = {
    "default": (),
    "kserve": ("mode=kserve", KSERVE_URI),
    "no-autoscaling": ("autoscaling.enabled=false", "replicaCount=3", "edge.autoscaling.enabled=false"),
    "no-edge": ("edge.enabled=false", "service.headlessGrpc=false"),
    "edge-no-headless-toggle": ("service.headlessGrpc=false",),
    "edge-tls-secret-and-key": (
        "edge.tls.secretName=edge-tls",
        "edge.apiKeySecret.name=edge-key",
        "edge.service.type=LoadBalancer",
        "clusterDomain=corp.example",
    ),
    "edge-cert-manager": ("edge.tls.certManager.issuerName=internal-ca", "edge.tls.certManager.dnsNames={a.example}"),
    "object-storage": ("modelRepository.uri=s3://bucket/repo", "modelRepository.credentialsSecret=s3-keys"),
}
"""Every rendered variant the chart tests walk: strict validation, restricted Pod Security, disruptions, checkov."""

CERTIFICATE_SUBSET: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "cert-manager.io/v1"},
        "kind": {"const": "Certificate"},
        "metadata": {"type": "object"},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["secretName", "issuerRef"],
            "properties": {
                "secretName": {"type": "string", "minLength": 1},
                "issuerRef": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["name"],
                    "properties": {
                        "name": {"type": "string", "minLength": 1},
                        "kind": {"enum": ["Issuer", "ClusterIssuer"]},
                        "group": {"type": "string"},
                    },
                },
                "dnsNames": {"type": "array", "items": {"type": "string", "minLength": 1}},
                "privateKey": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "algorithm": {"enum": ["RSA", "ECDSA", "Ed25519"]},
                        "size": {"type": "integer"},
                        "rotationPolicy": {"enum": ["Never", "Always"]},
                    },
                },
            },
        },
    },
}
"""The fields of cert-manager's Certificate (cert-manager.io/v1) this chart writes, as cert-manager documents them
(https://cert-manager.io/docs/usage/certificate/): a hand-written subset (its CRD is not vendored here), strict."""


def venv_tool(name: str, install_script: str) -> str:
    """A tool `make setup` installs into the venv (by `install_script`), else PATH's; skipped when missing, but CI
    fails (it runs `make setup`)."""
    candidate = Path(sys.executable).parent / name
    found = str(candidate) if candidate.is_file() else shutil.which(name)
    if found is None:
        message = f"{name} is not installed: run `bash {install_script} .venv` (make setup does)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    return found


@cache
def helm() -> str:
    """The helm binary of deploy/kubernetes/install_helm.sh."""
    return venv_tool("helm", "deploy/kubernetes/install_helm.sh")


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
    if key == ("cert-manager.io/v1", "Certificate"):
        jsonschema.Draft7Validator(CERTIFICATE_SUBSET).validate(obj)
        return
    if key == ("monitoring.coreos.com/v1", "PrometheusRule"):
        _check_prometheus_rule(obj)
        return
    if key in crd_schemas():
        jsonschema.Draft7Validator(crd_schemas()[key]).validate(obj)
        return
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError as exc:
        raise NoSchemaError(str(exc)) from exc


def _check_prometheus_rule(obj: dict[str, Any]) -> None:
    """A PrometheusRule: only apiVersion/kind/metadata/spec.groups, and the groups pass `promtool check rules` (the
    spec is a Prometheus rule file; its CRD is not vendored here)."""
    assert set(obj) == {"apiVersion", "kind", "metadata", "spec"} and set(obj["spec"]) == {"groups"}, obj.keys()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "rules.yaml"
        path.write_text(yaml.safe_dump(obj["spec"]))
        check = subprocess.run(
            [require_binary("promtool", "prometheus"), "check", "rules", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
    if check.returncode != 0:
        raise jsonschema.ValidationError(f"promtool check rules: {check.stdout}{check.stderr}")


def test_helm_lint_is_clean_for_every_variant() -> None:
    """`helm lint --strict` (values checked against values.schema.json) with each variant's values."""
    for name, sets in VARIANTS.items():
        command = [helm(), "lint", "--strict", str(CHART), "--kube-version", KUBERNETES_VERSION]
        command += [arg for value in sets for arg in ("--set", value)]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, f"{name}: {result.stdout}{result.stderr}"


@pytest.mark.parametrize(
    ("variant", "kinds"),
    [
        (
            "default",
            {
                "Deployment",
                "Service",
                "HorizontalPodAutoscaler",
                "PodDisruptionBudget",
                "ServiceMonitor",
                "PrometheusRule",
                "ConfigMap",
                "NetworkPolicy",
            },
        ),
        ("kserve", {"ServingRuntime", "InferenceService", "ConfigMap"}),
        ("edge-cert-manager", None),
        ("no-autoscaling", None),
        ("no-edge", None),
        ("edge-tls-secret-and-key", None),
        ("edge-no-headless-toggle", None),
        ("object-storage", None),
    ],
)
def test_rendered_objects_pass_strict_schema_validation(variant: str, kinds: set[str] | None) -> None:
    objects = render(*VARIANTS[variant])
    if kinds is not None:
        assert {obj["kind"] for obj in objects} == kinds
    for obj in objects:
        validate(obj)


@pytest.mark.parametrize(
    "value",
    [
        "mode=kservee",  # was: a lone ConfigMap rendered
        "triton.replicas=2",  # unknown key (replicaCount): was silently ignored
        "edge.tls.secretname=edge-tls",  # a typo'd key one level down
        "triton.ports.http=not-a-port",
        "podDisruptionBudget.maxUnavailable=1.5",
        "autoscaling.minReplicas=0",
        "serviceMonitor.interval=every minute",
    ],
)
def test_a_typo_or_wrong_type_fails_helm_lint_and_template(value: str) -> None:
    """values.schema.json (additionalProperties: false throughout) makes helm refuse them before rendering."""
    for command in (["lint", "--strict", str(CHART)], ["template", "attnserve", str(CHART)]):
        result = subprocess.run(
            [helm(), *command, "--set", value], capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode != 0, f"helm {command[0]} accepted --set {value}"
        assert "values don't meet the specifications of the schema" in result.stdout + result.stderr


def test_a_broken_value_the_schema_leaves_open_fails_strict_validation() -> None:
    # securityContext blocks are Kubernetes objects passed through; strict validation checks their fields
    broken = next(o for o in render("triton.podSecurityContext.runAsUser=root") if o["kind"] == "Deployment")
    with pytest.raises(jsonschema.ValidationError):
        validate(broken)


def test_kserve_custom_resources_with_a_broken_value_fail() -> None:
    objects = {obj["kind"]: obj for obj in render(*VARIANTS["kserve"])}
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
    runtime = next(obj for obj in render(*VARIANTS["kserve"]) if obj["kind"] == "ServingRuntime")
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
    assert [v["name"] for v in spec["volumes"]] == ["dshm", "tmp"]


def test_probes_gpu_services_and_autoscaling() -> None:
    objects = render()
    deployment = next(obj for obj in objects if obj["kind"] == "Deployment" and obj["metadata"]["name"] == "attnserve")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    services = {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == "Service"}
    main = services["attnserve"]
    assert {p["name"]: p["port"] for p in main["spec"]["ports"]} == {"http": 8000, "grpc": 8001, "metrics": 8002}
    assert services["attnserve-grpc-headless"]["spec"]["clusterIP"] == "None"
    hpa = next(o for o in objects if o["kind"] == "HorizontalPodAutoscaler" and o["metadata"]["name"] == "attnserve")
    adapter = yaml.safe_load((ROOT / "deploy" / "kubernetes" / "prometheus-adapter-values.yaml").read_text())
    rule = adapter["rules"]["custom"][0]
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    metric = hpa["spec"]["metrics"][0]["pods"]
    assert metric["metric"]["name"] == rule["name"]["as"] == values["autoscaling"]["metricName"]
    assert "spec" in deployment and "replicas" not in deployment["spec"]  # the HPA owns the count
    monitor = next(obj for obj in objects if obj["kind"] == "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"


RECORDING_RULES = CHART / "files" / "recording_rules.yaml"


def _recorded() -> dict[str, str]:
    """record name -> expression, from the chart's recording rules."""
    groups = yaml.safe_load(RECORDING_RULES.read_text())["groups"]
    return {rule["record"]: rule["expr"] for group in groups for rule in group["rules"]}


def test_dashboard_and_adapter_read_only_recorded_series() -> None:
    """One definition of every expression: the dashboard's and the adapter's queries name recorded series."""
    recorded = _recorded()
    dashboard = json.loads((CHART / "dashboards" / "triton.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    assert exprs and all(expr in recorded for expr in exprs), [e for e in exprs if e not in recorded]
    adapter = yaml.safe_load((ROOT / "deploy" / "kubernetes" / "prometheus-adapter-values.yaml").read_text())
    rule = adapter["rules"]["custom"][0]
    assert rule["seriesQuery"].split("{")[0] in recorded and rule["name"]["matches"] in recorded
    assert "<<.Series>>" in rule["metricsQuery"] and "nv_" not in rule["metricsQuery"]
    prometheus_rule = next(o for o in render() if o["kind"] == "PrometheusRule")
    assert prometheus_rule["spec"] == yaml.safe_load(RECORDING_RULES.read_text())


@pytest.mark.triton
def test_recording_rules_use_metric_names_triton_exports(triton_server) -> None:
    import urllib.request

    with urllib.request.urlopen(triton_server.metrics_url, timeout=10) as response:
        exported = set(re.findall(r"^(nv_[a-z_]+)", response.read().decode(), flags=re.MULTILINE))
    used = set(re.findall(r"\bnv_[a-z_]+", " ".join(_recorded().values())))
    gpu_only = {name for name in used if name.startswith("nv_gpu_")}  # exported only where a GPU is visible
    assert used - gpu_only and used - gpu_only <= exported, sorted(used - gpu_only - exported)
    panels = {panel["title"] for panel in json.loads((CHART / "dashboards" / "triton.json").read_text())["panels"]}
    for needed in ("Throughput", "Queue time", "Compute time", "batch size", "Failed"):
        assert any(needed.lower() in title.lower() for title in panels), needed


def _haproxy() -> str:
    binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not Path(binary).is_file():
        message = "haproxy is not installed (Debian package haproxy; .ci/run installs it)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    return binary


def _edge(objects: list[dict[str, Any]], kind: str, suffix: str = "-edge") -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == f"attnserve{suffix}")


def test_in_cluster_edge_is_the_generated_haproxy_config_and_haproxy_accepts_it(tmp_path: Path) -> None:
    from attnserve.serving.haproxy import KUBERNETES_DNS_ENV

    objects = render()
    generated = (CHART / "files" / "haproxy.cfg").read_text()
    # byte for byte, final newline included (HAProxy refuses a file whose last line has no LF)
    assert _edge(objects, "ConfigMap")["data"]["haproxy.cfg"] == generated
    assert "server-template replica 1-16" in generated and "proto h2" in generated
    assert "log stdout" in generated  # the access log goes to the container's stdout (was: an undefined target)
    path = tmp_path / "haproxy.cfg"
    path.write_text(generated)
    env = dict(os.environ, **{KUBERNETES_DNS_ENV: "localhost"})
    check = subprocess.run([_haproxy(), "-c", "-f", str(path)], capture_output=True, text=True, env=env, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    # the edge's pods are never selected as Triton pods (the headless Service would send HAProxy to itself)
    triton_selector = _edge(objects, "Deployment", "")["spec"]["selector"]["matchLabels"]
    edge_labels = _edge(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert not triton_selector.items() <= edge_labels.items()
    for service in (o for o in objects if o["kind"] == "Service" and o["metadata"]["name"].startswith("attnserve-g")):
        assert service["spec"]["selector"]["app.kubernetes.io/component"] == "triton"


@pytest.mark.parametrize("variant", ["edge-no-headless-toggle", "edge-tls-secret-and-key"])
def test_edge_finds_its_backends_in_every_variant_and_serves_tls_and_key_from_secrets(
    variant: str, tmp_path: Path
) -> None:
    from attnserve.serving.haproxy import API_KEY_ENV, KUBERNETES_DNS_ENV, TLS_CERTIFICATE_ENV

    objects = render(*VARIANTS[variant])
    container = _edge(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    env = {item["name"]: item for item in container["env"]}
    domain = "corp.example" if variant == "edge-tls-secret-and-key" else "cluster.local"
    dns = env[KUBERNETES_DNS_ENV]["value"]
    assert dns == f"attnserve-grpc-headless.inference.svc.{domain}"
    headless = {o["metadata"]["name"] for o in objects if o["kind"] == "Service"}
    assert dns.split(".")[0] in headless  # rendered with service.headlessGrpc=false too
    assert _edge(objects, "Service")["spec"]["type"] == ("LoadBalancer" if "tls" in variant else "ClusterIP")
    assert _edge(objects, "Service", "")["spec"]["type"] == "ClusterIP"  # Triton itself is never exposed
    if variant != "edge-tls-secret-and-key":
        assert TLS_CERTIFICATE_ENV not in env and API_KEY_ENV not in env
        return
    assert env[API_KEY_ENV]["valueFrom"]["secretKeyRef"] == {"name": "edge-key", "key": "api-key"}
    volumes = {v["name"]: v for v in _edge(objects, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == "edge-tls"
    mounted = {i["path"]: i["key"] for i in volumes["tls"]["secret"]["items"]}
    certificate = Path(env[TLS_CERTIFICATE_ENV]["value"])
    assert mounted == {certificate.name: "tls.crt", f"{certificate.name}.key": "tls.key"}
    # the configuration as the pod sees it: certificate and key where the Secret's items put them, the key in env
    folder = tmp_path / "tls"
    folder.mkdir()
    openssl = shutil.which("openssl") or pytest.skip("openssl is not installed")
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1",
         "-subj", "/CN=attnserve-edge", "-keyout", str(folder / f"{certificate.name}.key"),
         "-out", str(folder / certificate.name)],
        check=True, capture_output=True,
    )  # fmt: skip
    config = tmp_path / "haproxy.cfg"
    config.write_text(_edge(objects, "ConfigMap")["data"]["haproxy.cfg"])
    pod_env = {
        KUBERNETES_DNS_ENV: "localhost",
        TLS_CERTIFICATE_ENV: str(folder / certificate.name),
        API_KEY_ENV: "k" * 24,
    }
    check = subprocess.run(
        [_haproxy(), "-c", "-f", str(config)], capture_output=True, text=True, env={**os.environ, **pod_env}
    )
    assert check.returncode == 0, check.stdout + check.stderr
    # the certificate really is read: a missing one fails the same check
    pod_env[TLS_CERTIFICATE_ENV] = str(folder / "absent.pem")
    missing = subprocess.run(
        [_haproxy(), "-c", "-f", str(config)], capture_output=True, text=True, env={**os.environ, **pod_env}
    )
    assert missing.returncode != 0


def test_edge_has_metrics_autoscaling_disruption_budget_and_cert_manager_certificate() -> None:
    objects = render(*VARIANTS["edge-cert-manager"])
    pod = _edge(objects, "Deployment")["spec"]["template"]["spec"]
    assert {p["name"]: p["containerPort"] for p in pod["containers"][0]["ports"]}["metrics"] == 8404
    assert pod["containers"][0]["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    monitor = _edge(objects, "ServiceMonitor")
    metrics_service = _edge(objects, "Service", "-edge-metrics")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= metrics_service["metadata"]["labels"].items()
    assert (
        not monitor["spec"]["selector"]["matchLabels"].items()
        <= _edge(objects, "Service")["metadata"]["labels"].items()
    )
    hpa = _edge(objects, "HorizontalPodAutoscaler")
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert _edge(objects, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    certificate = _edge(objects, "Certificate")
    assert certificate["spec"]["issuerRef"]["name"] == "internal-ca"
    assert "attnserve-edge.inference.svc.cluster.local" in certificate["spec"]["dnsNames"]
    assert "a.example" in certificate["spec"]["dnsNames"]
    tls_volume = next(v for v in pod["volumes"] if v["name"] == "tls")
    assert tls_volume["secret"]["secretName"] == certificate["spec"]["secretName"]


def _pod_specs(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any], list[dict[str, Any]]]]:
    """(name, pod-level securityContext, containers) of every workload, KServe's included."""
    specs = []
    for obj in objects:
        if obj["kind"] == "Deployment":
            pod = obj["spec"]["template"]["spec"]
            specs.append((obj["metadata"]["name"], pod.get("securityContext", {}), pod["containers"]))
    runtimes = [o for o in objects if o["kind"] == "ServingRuntime"]
    services = [o for o in objects if o["kind"] == "InferenceService"]
    for runtime, service in zip(runtimes, services, strict=True):
        pod_context = service["spec"]["predictor"].get("securityContext", {})
        specs.append((runtime["metadata"]["name"], pod_context, runtime["spec"]["containers"]))
    return specs


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_container_meets_the_restricted_pod_security_standard(variant: str) -> None:
    """The restricted profile's required fields (kubernetes.io/docs/concepts/security/pod-security-standards)."""
    specs = _pod_specs(render(*VARIANTS[variant]))
    assert specs
    for name, pod_context, containers in specs:
        for container in containers:
            context = {**pod_context, **container.get("securityContext", {})}
            where = f"{variant}: {name}/{container['name']}"
            assert context.get("runAsNonRoot") is True and context.get("runAsUser", 1) != 0, where
            assert context.get("allowPrivilegeEscalation") is False, where
            assert context.get("capabilities", {}).get("drop") == ["ALL"], where
            assert not context.get("capabilities", {}).get("add"), where
            assert context.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
            assert context.get("readOnlyRootFilesystem") is True, where
            assert not context.get("privileged"), where


def _allowed_disruptions(budget: dict[str, Any], healthy: int) -> int:
    """Kubernetes' disruption controller: desiredHealthy from minAvailable, or expected - maxUnavailable (a
    percentage rounds up); allowed = currentHealthy - desiredHealthy, never below 0."""
    spec = budget["spec"]
    if "minAvailable" in spec:
        value = spec["minAvailable"]
        desired = -(-healthy * int(value[:-1]) // 100) if isinstance(value, str) else value
    else:
        value = spec["maxUnavailable"]
        unavailable = -(-healthy * int(value[:-1]) // 100) if isinstance(value, str) else value
        desired = healthy - unavailable
    return max(0, healthy - desired)


@pytest.mark.parametrize("autoscaling", [True, False])
def test_drains_complete_at_every_replica_count(autoscaling: bool) -> None:
    for replicas in range(1, 5):
        sets = ("edge.autoscaling.enabled=false", f"edge.replicaCount={replicas}")
        if autoscaling:
            sets += (f"autoscaling.minReplicas={replicas}", "autoscaling.maxReplicas=8")
        else:
            sets += ("autoscaling.enabled=false", f"replicaCount={replicas}")
        objects = render(*sets)
        for deployment in (o for o in objects if o["kind"] == "Deployment"):
            name = deployment["metadata"]["name"]
            hpa = next(
                (o for o in objects if o["kind"] == "HorizontalPodAutoscaler" and o["metadata"]["name"] == name), None
            )
            running = hpa["spec"]["minReplicas"] if hpa else deployment["spec"]["replicas"]
            assert running == replicas
            budget = next(o for o in objects if o["kind"] == "PodDisruptionBudget" and o["metadata"]["name"] == name)
            assert budget["spec"]["selector"]["matchLabels"].items() <= (
                deployment["spec"]["template"]["metadata"]["labels"].items()
            )
            assert _allowed_disruptions(budget, running) >= 1, (name, replicas, autoscaling, budget["spec"])
    # the old budget (minAvailable 1 with the HPA's minimum of 1 replica) computes as a hanging drain: the check bites
    assert _allowed_disruptions({"spec": {"minAvailable": 1}}, 1) == 0


def test_only_the_edge_and_prometheus_reach_triton_and_pods_spread_over_nodes() -> None:
    objects = render()
    policy = _edge(objects, "NetworkPolicy", "")
    deployment = _edge(objects, "Deployment", "")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    rules = policy["spec"]["ingress"]
    edge_labels = _edge(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    request_rule, metrics_rule = rules
    assert [p["port"] for p in request_rule["ports"]] == ["http", "grpc"]
    assert [peer["podSelector"]["matchLabels"] for peer in request_rule["from"]] == [
        {k: v for k, v in edge_labels.items() if k.startswith("app.kubernetes.io/")}
    ]
    assert [p["port"] for p in metrics_rule["ports"]] == ["metrics"]
    assert "namespaceSelector" in metrics_rule["from"][0]
    spread = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"][0]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["labelSelector"]["matchLabels"].items() <= pod_labels.items()
    # without the edge, Triton takes no request traffic unless peers are named
    no_edge = _edge(render(*VARIANTS["no-edge"]), "NetworkPolicy", "")
    assert [r["ports"][0]["port"] for r in no_edge["spec"]["ingress"]] == ["metrics"]


def test_kserve_variant_has_shm_gpu_toleration_pull_secrets_and_requires_storage_uri() -> None:
    objects = render(*VARIANTS["kserve"], "imagePullSecrets[0].name=registry")
    runtime = next(o for o in objects if o["kind"] == "ServingRuntime")["spec"]
    mounts = {m["name"]: m["mountPath"] for m in runtime["containers"][0]["volumeMounts"]}
    assert mounts["dshm"] == "/dev/shm"
    shm = next(v for v in runtime["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"]["medium"] == "Memory"
    assert any(t["key"] == "nvidia.com/gpu" for t in runtime["tolerations"])
    assert runtime["imagePullSecrets"] == [{"name": "registry"}]
    service = next(o for o in objects if o["kind"] == "InferenceService")
    assert service["spec"]["predictor"]["model"]["storageUri"] == "s3://models/attnserve"
    missing = subprocess.run(
        [helm(), "template", "attnserve", str(CHART), "--set", "mode=kserve"], capture_output=True, text=True
    )
    assert missing.returncode != 0 and "kserve.storageUri is required" in missing.stderr


def _checkov() -> str:
    """checkov from its own venv (deploy/kubernetes/install_checkov.sh)."""
    return venv_tool("checkov", "deploy/kubernetes/install_checkov.sh")


def test_checkov_passes_every_rendered_variant(tmp_path: Path) -> None:
    """One checkov process over every variant (its startup dominates); no failed check, and every skipped check
    carries its reason in the chart, on the object it concerns. A copy of the Deployment stripped of its
    securityContext rides along in the same scan: it must fail (the scan can fail)."""
    for name, sets in VARIANTS.items():
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump_all(render(*sets)))
    broken = json.loads(json.dumps(next(o for o in render() if o["kind"] == "Deployment")))
    broken["metadata"]["name"] = "stripped"
    broken["spec"]["template"]["spec"]["containers"][0].pop("securityContext")
    (tmp_path / "stripped.yaml").write_text(yaml.safe_dump(broken))
    result = subprocess.run(
        [_checkov(), "-d", str(tmp_path), "--framework", "kubernetes", "--compact", "-o", "json", "--skip-download"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    results = json.loads(result.stdout)["results"]
    failed = {(c["check_id"], Path(c["file_path"]).stem) for c in results["failed_checks"]}
    assert {stem for _, stem in failed} == {"stripped"}, sorted(failed)
    assert {"CKV_K8S_20", "CKV_K8S_22", "CKV_K8S_28"} <= {check for check, _ in failed}, sorted(failed)
    scanned = {Path(c["file_path"]).stem for c in results["passed_checks"]}
    assert scanned == set(VARIANTS) | {"stripped"}, scanned
    for skipped in results["skipped_checks"]:
        reason = skipped["check_result"].get("suppress_comment", "")
        assert len(reason) > 20, (skipped["check_id"], skipped["resource"], reason)
