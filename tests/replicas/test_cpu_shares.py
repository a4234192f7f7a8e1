"""Replicas on one host get disjoint shares of the CPUs (Linux affinity), inherited by their python-backend stubs,
so each replica's ONNX Runtime sizes its threads to its own share instead of every replica taking every core."""

from __future__ import annotations

import os

import pytest

from attnserve.serving.replicas import cpu_shares
from attnserve.serving.watchdog import stub_pids

pytestmark = [pytest.mark.triton, pytest.mark.slow]


def _allowed(pid: int) -> set[int]:
    return set(os.sched_getaffinity(pid))


def test_cpu_shares_split_the_affinity_mask() -> None:
    cpus = sorted(os.sched_getaffinity(0))
    shares = cpu_shares(len(cpus))
    assert all(share is not None and len(share) == 1 for share in shares)
    assert sorted(c for share in shares for c in share or []) == cpus
    assert cpu_shares(len(cpus) + 1) == [None] * (len(cpus) + 1)  # more replicas than CPUs: no pinning


def test_each_replica_and_its_stubs_run_on_their_own_share(replica_set) -> None:
    shares = [_allowed(server.pid) for server in replica_set.servers]
    if len(os.sched_getaffinity(0)) < len(shares):
        pytest.skip("fewer CPUs than replicas: replicas share them")
    assert not set.intersection(*shares), f"replicas' CPU sets overlap: {shares}"
    for server, share in zip(replica_set.servers, shares):
        stubs = stub_pids(server.pid)
        assert stubs, f"no python-backend stub under replica {server.pid}"
        assert all(_allowed(pid) == share for pid in stubs), (share, {pid: _allowed(pid) for pid in stubs})
