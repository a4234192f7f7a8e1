"""Every operation a plan calls exists on each tritonclient transport the clients drive (no server needed)."""

from __future__ import annotations

import inspect

import pytest
import tritonclient.grpc
import tritonclient.grpc.aio
import tritonclient.http
import tritonclient.http.aio

from attnserve.clients.core import Call, Operation

TRANSPORTS = {
    "http": tritonclient.http.InferenceServerClient,
    "http.aio": tritonclient.http.aio.InferenceServerClient,
    "grpc": tritonclient.grpc.InferenceServerClient,
    "grpc.aio": tritonclient.grpc.aio.InferenceServerClient,
}


@pytest.mark.parametrize("transport", sorted(TRANSPORTS))
def test_every_operation_is_a_method_of_the_transport(transport: str) -> None:
    client_class = TRANSPORTS[transport]
    missing = [op.value for op in Operation if not inspect.isfunction(getattr(client_class, op.value, None))]
    assert not missing, f"{transport} InferenceServerClient lacks {missing}"


def test_a_call_invokes_the_named_method_with_its_arguments() -> None:
    class Recorder:
        def get_model_config(self, *args: object, **kwargs: object) -> tuple[object, ...]:
            return ("config", args, kwargs)

    call = Call(Operation.GET_MODEL_CONFIG, ("vit",), {"as_json": True})
    assert call.on(Recorder()) == ("config", ("vit",), {"as_json": True})
