"""The serving image's Python environment, for real: every generated python-backend model loads and answers in it.

`docker/Dockerfile.triton` installs `docker/triton-python-requirements.txt` and the project with `--no-deps`. This
test builds exactly that in a fresh virtual environment (plus ONNX Runtime: on the embedded server the CPU runner
stands in for the onnxruntime backend of NVIDIA's image), puts it first on the PATH of a real Triton's
python-backend stubs, and serves the session's exported repository from it: runner, explain, pre-processing,
post-processing (detection), pipeline and timeline. A module the models import that only the development environment has fails the load.
The stubs' memory maps show which environment they really run from.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
from support.installs import REPOSITORY_ROOT, SERVING_IMAGE_REQUIREMENTS, fresh_venv, venv_site_packages
from support.media import encoded_image, encoded_video

pytestmark = [pytest.mark.triton, pytest.mark.slow]

DETECTOR = "det_shapes"  # the session's server has no detector; its NAME_postprocess is a python model too


def _stub_libraries(server_pid: int) -> set[str]:
    """Shared objects mapped by the python-backend stubs of the server `server_pid`."""
    from attnserve.serving.watchdog import stub_pids

    libraries: set[str] = set()
    for pid in stub_pids(server_pid):
        try:
            libraries |= {
                line.split()[-1] for line in Path(f"/proc/{pid}/maps").read_text().splitlines() if ".so" in line
            }
        except OSError:
            continue  # the process ended meanwhile
    return libraries


def test_the_dockerfile_installs_the_requirements_file_and_passes_hadolint() -> None:
    import subprocess
    import sys

    text = (REPOSITORY_ROOT / "docker" / "Dockerfile.triton").read_text()
    assert "-r /opt/attnserve/docker/triton-python-requirements.txt" in text and "--no-deps /opt/attnserve" in text
    hadolint = Path(sys.executable).parent / "hadolint"
    dockerfiles = [str(REPOSITORY_ROOT / "docker" / name) for name in ("Dockerfile.triton", "Dockerfile.build")]
    completed = subprocess.run([str(hadolint), *dockerfiles], capture_output=True, text=True, timeout=60, check=False)
    assert completed.returncode == 0 and completed.stdout == "", completed.stdout + completed.stderr


def test_every_python_backend_model_loads_and_answers_in_the_image_environment(
    triton_server, distributions: tuple[Path, Path], tmp_path: Path
) -> None:
    from support.deployables import build_deployables_repository
    from support.servers import local_server

    from attnserve.clients.client import TritonClient
    from attnserve.clients.settings import ClientSettings
    from attnserve.serving.runtime_view import build_runtime_repository

    _, wheel = distributions
    requirements = ("-r", str(SERVING_IMAGE_REQUIREMENTS), f"onnxruntime=={onnxruntime.__version__}")
    venv = fresh_venv(tmp_path / "image-env", wheel, requirements=requirements)
    repository = tmp_path / "model_repository"
    shutil.copytree(triton_server.repository, repository, ignore=shutil.ignore_patterns(".attnserve-*"))
    build_deployables_repository(repository, [DETECTOR], tiny=True)  # adds NAME_postprocess, a python model too
    view, loaded, _ = build_runtime_repository(repository, tmp_path / "runtime")
    kinds = {name.rsplit("_", 1)[-1] for name in loaded}
    assert {"explain", "preprocess", "postprocess", "pipeline", "timeline"} <= kinds, loaded

    path = f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin"
    server = local_server(view, loaded, tmp_path / "server")
    server.extra_env.update({"PATH": path, "VIRTUAL_ENV": str(venv), "PYTHONNOUSERSITE": "1"})
    with server:  # start() waits until every model is READY, and fails naming the one that did not load
        libraries = _stub_libraries(server.pid)
        numpy_libs = [lib for lib in libraries if "/numpy/" in lib]
        assert numpy_libs and all(lib.startswith(str(venv_site_packages(venv))) for lib in numpy_libs), numpy_libs
        settings = ClientSettings(url=server.http_url, protocol="http", retries=0)
        with TritonClient(settings) as client:
            image_model = next(name for name, spec in triton_server.specs.items() if spec.kind == "image")
            video_model = next(name for name, spec in triton_server.specs.items() if spec.kind == "video")
            pixels = np.zeros(triton_server.specs[image_model].io.input_shape, dtype=np.uint8)
            assert client.classify(image_model, [pixels], top_k=1)[0].label
            piped = client.classify_encoded(f"{image_model}_pipeline", [encoded_image()], top_k=1)
            assert piped[0].label in triton_server.specs[image_model].io.labels
            timeline = client.timeline(video_model, encoded_video(frames=24), window_s=1.0, stride_s=1.0, top_k=1)
            assert timeline.segments and timeline.video
            (detections,) = client.detect(DETECTOR, [encoded_image(height=64, width=112, seed=3)])
            boxes = [detection["box"] for detection in detections]
            assert all(0 <= x0 <= x1 <= 112 and 0 <= y0 <= y1 <= 64 for x0, y0, x1, y1 in boxes), boxes
