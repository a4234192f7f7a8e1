"""The generated HAProxy configuration (accepted by the real binary), the missing-binary error, and a stopped
replica set leaving no process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from .conftest import require_binary
from .test_edge import make_certificate


def _replicas():
    from attnserve.serving.haproxy import ReplicaPorts

    return [ReplicaPorts("replica0", 18000, 18001, 18002), ReplicaPorts("replica1", 18010, 18011, 18012)]


@pytest.mark.parametrize("edge_kind", ["cleartext", "tls+key"])
def test_generated_configuration_is_accepted_by_haproxy(edge_kind: str, tmp_path: Path) -> None:
    from attnserve.serving.haproxy import API_KEY_ENV, EdgeSettings, haproxy_config

    binary = require_binary("haproxy", "haproxy")
    options = {}
    if edge_kind == "tls+key":
        pem, _ca = make_certificate(tmp_path)
        options = {"tls_certificate": pem, "api_key": "k" * 24}
    settings = EdgeSettings(maxconn_per_replica=3, queue_timeout_ms=7, **options)
    text = haproxy_config(settings, _replicas(), 28000, 28001)
    path = tmp_path / "haproxy.cfg"
    path.write_text(text)
    env = dict(os.environ, **{API_KEY_ENV: "k" * 24})
    check = subprocess.run([binary, "-c", "-f", str(path)], capture_output=True, text=True, env=env, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "k" * 24 not in text  # the key is read from the environment, never written into the file
    assert "timeout queue 7ms" in text and "maxconn 3" in text and "balance roundrobin" in text
    assert text.count("check port 1800") == 1 and "proto h2" in text  # gRPC servers checked on HTTP readiness
    # a broken value is refused by the same binary: the check can fail
    path.write_text(text.replace("balance roundrobin", "balance round-robin-please"))
    broken = subprocess.run([binary, "-c", "-f", str(path)], capture_output=True, text=True, env=env, check=False)
    assert broken.returncode != 0


def test_settings_refuse_a_weak_key_and_a_missing_certificate(tmp_path: Path) -> None:
    from attnserve.errors import UserInputError
    from attnserve.serving.haproxy import EdgeSettings, haproxy_config

    with pytest.raises(ValueError, match="at least 16 characters"):
        EdgeSettings(api_key="short")
    with pytest.raises(UserInputError, match="not found"):
        haproxy_config(EdgeSettings(tls_certificate=tmp_path / "absent.pem"), _replicas(), 1, 2)


def test_a_short_api_key_is_one_line_giving_its_length_never_the_key(monkeypatch, capsys) -> None:
    from attnserve.cli import main

    key = "k" * 14
    monkeypatch.setenv("ATTNSERVE_API_KEY", key)
    assert main(["replicas", "--require-api-key", "--replicas", "1"]) == 1
    error = capsys.readouterr().err.strip()
    assert "at least 16 characters" in error and "got 14 characters" in error, error
    assert key not in error and len(error.splitlines()) == 1 and "validation error" not in error, error
    with pytest.raises(SystemExit):
        main(["replicas", "--help"])
    assert "at least 16 characters" in " ".join(capsys.readouterr().out.split())  # the minimum is documented


def test_missing_haproxy_is_a_clear_error_naming_the_package(monkeypatch, replica_repository, tmp_path) -> None:
    from attnserve.errors import ServerError
    from attnserve.serving import haproxy
    from attnserve.serving.haproxy import EdgeSettings
    from attnserve.serving.replicas import ReplicaSet

    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(haproxy, "SYSTEM_BINARIES", ())
    replica_set = ReplicaSet(
        replica_repository.view, EdgeSettings(http_port=0, grpc_port=0), replicas=1, work_dir=tmp_path / "set"
    )
    with pytest.raises(ServerError, match=r"Debian package `haproxy` \(apt-get install -y haproxy\)"):
        replica_set.start()
    assert not any(server.is_running for server in replica_set.servers)  # nothing was started


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


@pytest.mark.triton
def test_stop_leaves_no_process(replica_repository, tmp_path) -> None:
    from reliability.helpers import descendants

    from attnserve.serving.haproxy import EdgeSettings
    from attnserve.serving.replicas import ReplicaSet

    require_binary("haproxy", "haproxy")
    replica_set = ReplicaSet(
        replica_repository.view,
        EdgeSettings(http_port=0, grpc_port=0),
        replicas=1,
        models=["rep_light"],
        work_dir=tmp_path / "set",
    )
    with replica_set:
        pids = [replica_set.haproxy_pid] + [s.pid for s in replica_set.servers]
        pids += [child.pid for s in replica_set.servers for child in descendants(s.pid)]  # python-backend stubs
        assert len(pids) >= 3 and all(_alive(pid) for pid in pids)
    assert not [pid for pid in pids if _alive(pid)]


@pytest.mark.triton
def test_cli_serves_through_haproxy_and_sigterm_leaves_nothing(replica_repository, tmp_path) -> None:
    from reliability.helpers import descendants

    from attnserve.serving.server import free_port

    require_binary("haproxy", "haproxy")
    http_port, grpc_port = free_port(), free_port()
    command = [str(Path(sys.executable).parent / "attnserve"), "replicas", "--replicas", "1"]
    command += ["--repository", str(replica_repository.source), "--models", "rep_light"]
    command += ["--http-port", str(http_port), "--grpc-port", str(grpc_port), "--work-dir", str(tmp_path / "w")]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and process.poll() is None:
            line = process.stdout.readline()
            lines.append(line)
            if "Ctrl-C to stop." in line:
                break
        assert process.poll() is None, "".join(lines)
        assert f"127.0.0.1:{http_port}" in "".join(lines)
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v2/models/rep_light/ready", timeout=5) as r:
            assert r.status == 200
        children = [child.pid for child in descendants(process.pid)]
        assert len(children) >= 3  # HAProxy, tritonserver, its python-backend stub
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=90) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert not [pid for pid in children if _alive(pid)]
