"""docker-compose.yml (GPU host): valid against the Compose schema, files it names exist, flags shared with
`attnserve serve`, loopback-only ports, GPU reservation, health check. No Docker engine here (docs/measured.md#no-docker)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from attnserve.catalogue import DEPLOYABLE_NAMES
from attnserve.serving.flags import compose_command

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_PATH = ROOT / "docker-compose.yml"
SCHEMA_PATH = Path(__file__).parent / "compose_spec.json"
NGC_RELEASE = "24.10"  # Triton 2.51, the release of the nvidia-pytriton wheel the CPU server runs


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_PATH.read_text())


def test_compose_file_is_valid_against_the_compose_specification(compose: dict) -> None:
    schema = json.loads(SCHEMA_PATH.read_text())
    schema.pop("$schema", None)  # draft 2019-09 header; the keywords it uses are draft-7 compatible
    jsonschema.Draft7Validator(schema).validate(compose)
    with pytest.raises(jsonschema.ValidationError):  # the validator does reject a broken service
        broken = {"services": {"triton": {"image": "x", "ports": [{"target": "not a port"}]}}}
        jsonschema.Draft7Validator(schema).validate(broken)


def test_every_referenced_file_exists(compose: dict) -> None:
    for name, service in compose["services"].items():
        build = service.get("build")
        if build:
            context = ROOT / build["context"]
            assert context.is_dir(), f"{name}: build context {context}"
            dockerfile = context / build["dockerfile"]
            assert dockerfile.is_file(), f"{name}: {dockerfile}"
            for copied in re.findall(r"^COPY\s+(.+?)\s+\S+$", dockerfile.read_text(), flags=re.MULTILINE):
                for source in copied.split():
                    assert (context / source).exists(), f"{dockerfile.name} copies {source}, which does not exist"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./") and source != "./runs":  # runs/ is made by training (git-ignored)
                assert (ROOT / source).exists(), f"{name}: volume source {source}"


def test_triton_command_is_the_one_attnserve_serve_builds(compose: dict) -> None:
    assert compose["services"]["triton"]["command"] == compose_command()


def test_images_are_one_nvidia_release(compose: dict) -> None:
    for dockerfile in ("Dockerfile.build", "Dockerfile.triton"):
        text = (ROOT / "docker" / dockerfile).read_text()
        assert f"ARG NGC_RELEASE={NGC_RELEASE}" in text and "${NGC_RELEASE}-py3" in text
    assert "nvcr.io/nvidia/tritonserver:${NGC_RELEASE}-py3" in (ROOT / "docker" / "Dockerfile.triton").read_text()


def test_ports_are_published_on_loopback_only(compose: dict) -> None:
    published = [port for service in compose["services"].values() for port in service.get("ports", [])]
    assert published and all(str(port).startswith("127.0.0.1:") for port in published)
    triton_ports = {int(port.split(":")[1]) for port in compose["services"]["triton"]["ports"]}
    assert triton_ports == {8000, 8001, 8002}


def test_gpu_reservation_health_check_and_build_order(compose: dict) -> None:
    triton = compose["services"]["triton"]
    devices = triton["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert "/v2/health/ready" in " ".join(triton["healthcheck"]["test"])
    assert triton["depends_on"]["build"]["condition"] == "service_completed_successfully"
    build_command = " ".join(compose["services"]["build"]["command"])
    assert "--tensorrt" in build_command and "attnserve pipelines" in build_command
    default_models = re.search(r"\$\{ATTNSERVE_MODELS:-([^}]*)\}", build_command)
    assert default_models and default_models.group(1).split() == list(DEPLOYABLE_NAMES)


def test_prometheus_scrapes_tritons_metrics_port(compose: dict) -> None:
    prometheus = compose["services"]["prometheus"]
    config_source = next(v.split(":")[0] for v in prometheus["volumes"] if v.endswith("prometheus.yml:ro"))
    config = yaml.safe_load((ROOT / config_source).read_text())
    targets = [t for job in config["scrape_configs"] for group in job["static_configs"] for t in group["targets"]]
    assert "triton:8002" in targets
