"""The package as users install it: the built wheel in a fresh virtual environment, outside the checkout.

Every command runs from that environment's `bin/attnserve`, in a temporary working folder, with no PYTHONPATH:
the checkout is not on `sys.path`, and `attnserve --version` proves where the package was imported from. One
`attnserve serve` answers a plain model, the image pipeline (encoded bytes in) and the video timeline; the
build image's CPU steps (`export --tensorrt` without TensorRT, `pipelines`) run from the wheel, and `attnserve
load` adds that model to the running server; `attnserve replicas --replicas 2` answers through HAProxy.
Third-party dependencies are borrowed from the test environment (see `support.installs.fresh_venv`).
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support.installs import fresh_venv, venv_environment, venv_site_packages
from support.media import encoded_image, encoded_video

pytestmark = [pytest.mark.triton, pytest.mark.slow]

LIVE_MODEL = "cnn_cbam_digits"  # exported from the wheel while the server runs, then loaded live
READY_TIMEOUT_S = 180


@dataclass(frozen=True)
class Installed:
    venv: Path
    workdir: Path
    env: dict[str, str]

    def run(self, *arguments: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        command = [str(self.venv / "bin" / "attnserve"), *arguments]
        return subprocess.run(
            command, cwd=self.workdir, env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )

    def ok(self, *arguments: str, timeout: float = 180) -> str:
        completed = self.run(*arguments, timeout=timeout)
        assert completed.returncode == 0, f"attnserve {' '.join(arguments)}:\n{completed.stdout}\n{completed.stderr}"
        return completed.stdout


@dataclass(frozen=True)
class Served:
    installed: Installed
    repository: Path
    http_url: str


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_ready(http_url: str, process: subprocess.Popen[str], log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        assert process.poll() is None, f"exited {process.returncode}:\n{log.read_text()[-4000:]}"
        try:
            with urllib.request.urlopen(f"http://{http_url}/v2/health/ready", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"not ready after {READY_TIMEOUT_S} s:\n{log.read_text()[-4000:]}")


def _stop(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=30)


def _start(installed: Installed, name: str, arguments: list[str], http_port: int) -> subprocess.Popen[str]:
    log = installed.workdir / f"{name}.log"
    with log.open("w") as handle:
        process = subprocess.Popen(
            [str(installed.venv / "bin" / "attnserve"), *arguments],
            cwd=installed.workdir, env=installed.env, stdout=handle, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
    try:
        _wait_ready(f"127.0.0.1:{http_port}", process, log)
    except BaseException:
        _stop(process)
        raise
    return process


@pytest.fixture(scope="module")
def installed(distributions: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("installed")
    venv = fresh_venv(root / "venv", distributions[1], borrow_dependencies=True)
    workdir = root / "work"
    workdir.mkdir()
    env = venv_environment(venv)
    env["ATTNSERVE_ADMIN_TOKEN"] = "installed-package-test-token"
    return Installed(venv, workdir, env)


@pytest.fixture(scope="module")
def served(installed: Installed, triton_server) -> Iterator[Served]:
    repository = installed.workdir / "model_repository"
    shutil.copytree(
        triton_server.repository,
        repository,
        ignore=lambda _, names: [n for n in names if n.startswith((LIVE_MODEL, ".attnserve"))],
    )
    http_port = _free_port()
    arguments = ["serve", "--repository", str(repository), "--http-port", str(http_port)]
    arguments += ["--grpc-port", str(_free_port()), "--metrics-port", str(_free_port())]
    process = _start(installed, "serve", arguments, http_port)
    try:
        yield Served(installed, repository, f"127.0.0.1:{http_port}")
    finally:
        _stop(process)


def test_the_package_comes_from_the_fresh_environment(installed: Installed) -> None:
    version = installed.ok("--version")
    assert str(venv_site_packages(installed.venv) / "attnserve") in version, version
    probe = "import attnserve, sys; print(attnserve.__file__); print(sys.path)"
    completed = subprocess.run(
        [str(installed.venv / "bin" / "python"), "-c", probe],
        cwd=installed.workdir, env=installed.env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    module_file, search_path = completed.stdout.splitlines()
    repository_root = str(Path(__file__).resolve().parents[2])
    assert module_file.startswith(str(venv_site_packages(installed.venv)))
    assert repository_root not in ast.literal_eval(search_path)  # "" is the working folder, a temporary one


def test_a_plain_model_and_its_image_pipeline_answer_alike(served: Served, triton_server) -> None:
    model = next(name for name, spec in triton_server.specs.items() if spec.kind == "image")
    image = served.installed.workdir / "photo.png"
    image.write_bytes(encoded_image(height=48, width=80))
    url = ["--url", served.http_url, "--protocol", "http", "--json", "--top-k", "1"]
    plain = json.loads(served.installed.ok("infer", "--model", model, *url, str(image)))
    piped = json.loads(served.installed.ok("infer", "--model", model, "--pipeline", *url, str(image)))
    (direct,), (decoded,) = plain["predictions"], piped["predictions"]
    assert direct["label"] in triton_server.specs[model].io.labels
    assert decoded["label"] == direct["label"] and decoded["score"] == pytest.approx(direct["score"], abs=1e-5)


def test_the_video_timeline_answers(served: Served, triton_server) -> None:
    model = next(name for name, spec in triton_server.specs.items() if spec.kind == "video")
    video = served.installed.workdir / "clip.mp4"
    video.write_bytes(encoded_video(frames=24))
    url = ["--url", served.http_url, "--protocol", "http", "--json"]
    timeline = json.loads(
        served.installed.ok("infer", "--model", model, "--timeline", "--window-s", "1", *url, str(video))
    )
    assert timeline["segments"] and timeline["video"][0]["label"] in triton_server.specs[model].io.labels


def test_export_and_pipelines_from_the_wheel_then_load_live(served: Served, tmp_path: Path) -> None:
    from attnserve.catalogue import default_spec
    from attnserve.models.checkpoint import build_model, save_run
    from attnserve.models.registry import tiny_arch_overrides

    spec = default_spec(LIVE_MODEL, **tiny_arch_overrides(LIVE_MODEL))
    runs = tmp_path / "runs"
    save_run(runs / LIVE_MODEL, build_model(spec), spec)  # random weights in a real checkpoint: a test model
    installed, repository = served.installed, str(served.repository)
    report = installed.ok(
        "export", LIVE_MODEL, "--runs-dir", str(runs), "--repository", repository, "--tensorrt", "--no-explain"
    )
    assert "skipped onnx2trt" in " ".join(report.split()), report  # the build image's steps, without a GPU
    installed.ok("pipelines", LIVE_MODEL, "--repository", repository)
    installed.ok("load", LIVE_MODEL, "--repository", repository)
    digit = installed.workdir / "digit.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 24), dtype=np.uint8)).save(digit)
    url = ["--url", served.http_url, "--protocol", "http", "--json", "--top-k", "1"]
    piped = json.loads(installed.ok("infer", "--model", LIVE_MODEL, "--pipeline", *url, str(digit)))
    assert piped["predictions"][0]["label"] in spec.io.labels


def test_two_replicas_answer_behind_haproxy(installed: Installed, served: Served, triton_server) -> None:
    from support.binaries import require_binary

    require_binary("haproxy", "haproxy")
    model = next(name for name, spec in triton_server.specs.items() if spec.kind == "image")
    http_port = _free_port()
    arguments = ["replicas", "--replicas", "2", "--repository", str(served.repository), "--models", model]
    arguments += ["--http-port", str(http_port), "--grpc-port", str(_free_port())]
    process = _start(installed, "replicas", arguments, http_port)
    try:
        pixels = installed.workdir / "pixels.png"
        pixels.write_bytes(encoded_image(height=32, width=32, seed=5))
        for _ in range(4):
            url = ["--url", f"127.0.0.1:{http_port}", "--protocol", "http", "--json", "--top-k", "1"]
            answer = json.loads(installed.ok("infer", "--model", model, *url, str(pixels)))
            assert answer["predictions"][0]["label"] in triton_server.specs[model].io.labels
    finally:
        _stop(process)
    assert os.path.exists(installed.workdir / "replicas.log")
