"""The launcher itself: a taken port fails clearly, a broken model is named, no process outlives the server."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import pytest
from serving_helpers import tiny_spec

from attnserve.errors import ServerError
from attnserve.serving.flags import TritonEndpoints
from attnserve.serving.runtime_view import build_runtime_repository
from attnserve.serving.server import ServerProcess, TritonServer, free_port


def _group_members(pgid: int) -> list[int]:
    """PIDs whose process group is `pgid` (from /proc), zombies excluded."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        state, process_group = fields[0], int(fields[2])
        if process_group == pgid and state != "Z":
            members.append(int(entry.name))
    return members


def _children(pid: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                children.append(int(entry.name))
    return children


def test_taken_port_fails_before_starting_with_the_port_named(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        endpoints = TritonEndpoints(http_port=free_port(), grpc_port=taken, metrics_port=free_port())
        server = TritonServer(tmp_path, models=["x"], endpoints=endpoints)
        with pytest.raises(ServerError, match=rf"grpc port {taken} on 127.0.0.1 is already in use.*--grpc-port"):
            server.start()
        assert not server.is_running


@pytest.mark.triton
def test_a_model_that_cannot_load_is_named_with_the_log_tail(tmp_path: Path, tiny_repository: Path) -> None:
    (tiny_repository / "tiny" / "1" / "model.onnx").write_bytes(b"this is not an ONNX graph")
    view, loaded, _ = build_runtime_repository(tiny_repository, tmp_path / "view", ["tiny"])
    server = TritonServer(view, models=loaded, endpoints=TritonEndpoints.any_free(), work_dir=tmp_path / "srv")
    server.start()
    with pytest.raises(ServerError) as failure:
        server.wait_ready(timeout=120)
    message = str(failure.value)
    assert "models that failed to load: tiny" in message
    assert "last lines of" in message and "tritonserver.log" in message
    assert not server.is_running and _group_members(server.pid) == []


@pytest.mark.triton
def test_stop_and_kill_leave_no_stray_processes(tmp_path: Path, tiny_repository: Path) -> None:
    view, loaded, _ = build_runtime_repository(tiny_repository, tmp_path / "view", ["tiny_pipeline"])
    assert tiny_spec().preprocess_name in loaded
    # a clean stop: SIGTERM, models unload, the stubs exit with the server
    with TritonServer(
        view, models=loaded, endpoints=TritonEndpoints.any_free(), process=ServerProcess(exit_timeout_s=5)
    ) as server:
        pid = server.pid
        assert len(_children(pid)) >= 2  # the python-backend stubs of tiny and tiny_preprocess
    assert server.stop() == 0  # already stopped by the with-block: returns the exit code of the clean exit
    assert _group_members(pid) == []

    # a crash: SIGKILL the server itself; stop() still reaps whatever it left behind
    server = TritonServer(
        view, models=loaded, endpoints=TritonEndpoints.any_free(), process=ServerProcess(exit_timeout_s=5)
    )
    server.start()
    server.wait_ready(timeout=120)
    stubs = _children(server.pid)
    assert stubs
    os.kill(server.pid, signal.SIGKILL)
    assert server.stop() == -signal.SIGKILL
    assert _group_members(server.pid) == []  # the stubs were in the server's group


def _processes_mentioning(text: str) -> list[int]:
    """PIDs whose command line contains `text` (the server and its stubs name the work folder)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if text in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.triton
def test_serve_cli_runs_until_sigterm_and_leaves_nothing_behind(tmp_path: Path, tiny_repository: Path) -> None:
    import subprocess

    from attnserve.serving.cli import serve_command

    work_dir = tmp_path / "serve"
    command = serve_command(tiny_repository, ready_timeout_s=120, work_dir=work_dir)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        ready_line = process.stdout.readline()
        assert ready_line.startswith("Triton READY"), ready_line + (process.stderr.read() if process.poll() else "")
        assert "tiny_pipeline" in ready_line and "tiny_trt" not in ready_line
        assert _processes_mentioning(str(work_dir))  # tritonserver and its stubs
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=90)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    assert "skipped tiny_trt" in stderr and "GPU" in stderr
    assert _processes_mentioning(str(work_dir)) == []


@pytest.mark.triton
def test_relative_work_dir_and_repository_start(
    tmp_path: Path, tiny_repository: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `attnserve demo` passes relative folders (runs/demo/...): the server must not depend on its cwd.
    monkeypatch.chdir(tmp_path)
    view, loaded, _ = build_runtime_repository(tiny_repository, Path("view"), [tiny_spec().name])
    with TritonServer(
        Path("view") / view.name,
        models=loaded,
        endpoints=TritonEndpoints.any_free(),
        work_dir=Path("server"),
        process=ServerProcess(exit_timeout_s=5),
    ) as server:
        assert server.work_dir.is_absolute()
        assert server.is_running
    assert (tmp_path / "server").is_dir()
