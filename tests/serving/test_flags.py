"""The tritonserver command line: loopback binds, explicit model control, restricted APIs."""

from __future__ import annotations

import pytest

from attnserve.errors import UserInputError
from attnserve.security import ADMIN_TOKEN_HEADER, RESTRICTED_APIS
from attnserve.serving.flags import TritonEndpoints, compose_command, restricted_api_value, triton_args


def _flags(args: list[str]) -> dict[str, list[str]]:
    parsed: dict[str, list[str]] = {}
    for arg in args:
        key, _, value = arg.partition("=")
        parsed.setdefault(key, []).append(value)
    return parsed


def test_defaults_bind_every_endpoint_to_loopback_and_load_listed_models() -> None:
    flags = _flags(triton_args("/repo", models=["a", "b"], admin_token="secret"))
    assert flags["--http-address"] == flags["--grpc-address"] == flags["--metrics-address"] == ["127.0.0.1"]
    assert flags["--http-port"] == ["8000"] and flags["--grpc-port"] == ["8001"] and flags["--metrics-port"] == ["8002"]
    assert flags["--model-control-mode"] == ["explicit"]
    assert flags["--load-model"] == ["a", "b"]
    expected = f"{','.join(RESTRICTED_APIS)}:{ADMIN_TOKEN_HEADER}=secret"
    assert flags["--http-restricted-api"] == [expected]
    assert flags["--grpc-restricted-protocol"] == [expected]


def test_no_token_means_no_restriction_flags_and_all_models_when_none_listed() -> None:
    flags = _flags(triton_args("/repo", models=None, admin_token=None))
    assert "--http-restricted-api" not in flags
    assert flags["--load-model"] == ["*"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(endpoints=TritonEndpoints(http_port=0)), "--http-port must be in 1..65535"),
        (dict(endpoints=TritonEndpoints(grpc_port=70000)), "--grpc-port must be in 1..65535"),
        (dict(endpoints=TritonEndpoints(http_port=9000, grpc_port=9000)), "ports must differ"),
        (dict(models=[]), "no models to load"),
        (dict(admin_token="a:b"), "must not contain"),
        (dict(admin_token=""), "non-empty"),
    ],
)
def test_bad_values_are_refused_with_the_reason(kwargs: dict, message: str) -> None:
    values = dict(models=["a"], admin_token="secret") | kwargs
    with pytest.raises(UserInputError, match=message):
        triton_args("/repo", **values)


def test_restricted_value_lists_every_api_group() -> None:
    value = restricted_api_value("tok")
    apis, _, header = value.partition(":")
    assert apis.split(",") == list(RESTRICTED_APIS)
    assert header == f"{ADMIN_TOKEN_HEADER}=tok"


def test_compose_command_listens_inside_the_container_and_reads_the_token_from_the_environment() -> None:
    command = compose_command()
    assert command[0] == "tritonserver"
    flags = _flags(command[1:])
    assert flags["--grpc-address"] == ["0.0.0.0"]  # published on 127.0.0.1 by compose's port mapping
    assert "${ATTNSERVE_ADMIN_TOKEN" in flags["--http-restricted-api"][0]
    assert flags["--model-repository"] == ["/models"]
