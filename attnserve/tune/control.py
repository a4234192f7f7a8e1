"""Load a candidate configuration into a running Triton through model control (a config override).

Triton's repository API loads a model with a config given in the request
(`POST /v2/repository/models/NAME/load` with `{"parameters": {"config": "<ModelConfig JSON>"}}`, see
https://github.com/triton-inference-server/server/blob/main/docs/protocol/extension_model_repository.md),
so each candidate is served under the model's own name, from the model's own files, on the embedded server
or any reachable one started with explicit model control (the admin token unlocks the API).
The override starts from the config the server reports for the model (`GET /v2/models/NAME/config`).
"""

from __future__ import annotations

import copy
import json
import time
import urllib.error
import urllib.request
from typing import Any

from attnserve.errors import ServerError
from attnserve.security import ADMIN_TOKEN_HEADER
from attnserve.tune.candidates import Candidate

SPEC_PARAMETER = "attnserve_spec"
RUNNER_PARAMETERS = {"runtime", "precision", "model_file", "intra_op_threads", "allow_spinning"}
LOAD_TIMEOUT_S = 180.0
READY_TIMEOUT_S = 30.0


class ModelControl:
    """Model-control calls on one server's HTTP endpoint (`host:port`), with the admin token."""

    def __init__(self, http_url: str, admin_token: str) -> None:
        self.base = http_url if "://" in http_url else f"http://{http_url}"
        self.headers = {ADMIN_TOKEN_HEADER: admin_token, "Content-Type": "application/json"}

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None, timeout: float = 30.0) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=self.headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                text = response.read().decode() or "{}"
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            try:
                detail = json.loads(detail).get("error", detail)
            except json.JSONDecodeError:
                pass
            raise ServerError(f"{method} {path}: HTTP {exc.code}: {detail}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise ServerError(f"{method} {path}: cannot reach {self.base}: {exc}") from exc
        return json.loads(text)

    def config(self, model: str) -> dict[str, Any]:
        """The config the server serves `model` with (JSON form of Triton's ModelConfig)."""
        return dict(self._call("GET", f"/v2/models/{model}/config"))

    def load(self, model: str, config: dict[str, Any] | None = None) -> None:
        """(Re)load `model`, with `config` as an override when given.

        Raises:
            ServerError: Triton refused or failed the load (its reason is in the message).
        """
        body = {"parameters": {"config": json.dumps(config)}} if config is not None else {}
        self._call("POST", f"/v2/repository/models/{model}/load", body, timeout=LOAD_TIMEOUT_S)
        self.wait_ready(model)

    def wait_ready(self, model: str, timeout: float = READY_TIMEOUT_S) -> None:
        """Block until `GET /v2/models/NAME/ready` answers 200: a model that ensembles call is reloaded with
        them, and a server with a stub watchdog may still be settling when the load call returns.

        Raises:
            ServerError: the model was not ready within `timeout` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._call("GET", f"/v2/models/{model}/ready", timeout=5.0)
                return
            except ServerError as exc:
                if time.monotonic() > deadline:
                    raise ServerError(f"{model} was not ready {timeout:.0f} s after its load: {exc}") from exc
            time.sleep(0.1)


def _set_parameter(config: dict[str, Any], key: str, value: str) -> None:
    config.setdefault("parameters", {})[key] = {"string_value": value}


def candidate_config(base: dict[str, Any], candidate: Candidate) -> dict[str, Any]:
    """The served config `base` with the candidate's knobs: batching, max batch, instances, runner parameters.

    Args:
        base: the model's config as the server reports it (`ModelControl.config`).
        candidate: the knobs to set.
    """
    config = copy.deepcopy(base)
    config["max_batch_size"] = candidate.max_batch_size
    if candidate.dynamic_batching:
        batching = dict(config.get("dynamic_batching") or {})
        batching["preferred_batch_size"] = list(candidate.preferred_batch_sizes)
        batching["max_queue_delay_microseconds"] = candidate.max_queue_delay_us
        config["dynamic_batching"] = batching
    else:
        config.pop("dynamic_batching", None)
    groups = config.get("instance_group") or [{"kind": "KIND_CPU"}]
    config["instance_group"] = [{**groups[0], "count": candidate.instance_count}]
    config["instance_group"][0].pop("name", None)
    _set_parameter(config, "intra_op_threads", str(candidate.intra_op_threads or _auto_threads(candidate)))
    _set_parameter(config, "allow_spinning", "1" if candidate.allow_spinning else "0")
    if candidate.variant is not None:
        _set_parameter(config, "runtime", candidate.variant.runtime)
        _set_parameter(config, "precision", candidate.variant.precision)
        if candidate.variant.path is not None:
            _set_parameter(config, "model_file", candidate.variant.path)
    spec_text = config.get("parameters", {}).get(SPEC_PARAMETER, {}).get("string_value")
    if spec_text:  # keep the spec the model carries true to what it now serves
        from attnserve.spec import ModelSpec

        _set_parameter(
            config, SPEC_PARAMETER, candidate.apply_to(ModelSpec.model_validate_json(spec_text)).model_dump_json()
        )
    return config


def _auto_threads(candidate: Candidate) -> int:
    from attnserve.runtimes.session import intra_op_threads_for

    return intra_op_threads_for(candidate.instance_count)


def served_knobs(config: dict[str, Any]) -> dict[str, Any]:
    """The tuned knobs as a served config states them (what the tests compare with the applied spec)."""
    batching = config.get("dynamic_batching")
    parameters = {key: value.get("string_value") for key, value in (config.get("parameters") or {}).items()}
    return {
        "dynamic_batching": batching is not None,
        "max_queue_delay_us": int((batching or {}).get("max_queue_delay_microseconds", 0)),
        "preferred_batch_sizes": tuple(int(b) for b in (batching or {}).get("preferred_batch_size", [])),
        "max_batch_size": int(config.get("max_batch_size", 0)),
        "instance_count": sum(int(g.get("count", 1)) for g in config.get("instance_group", [])) or 1,
        "intra_op_threads": int(parameters.get("intra_op_threads") or 0),
        "allow_spinning": parameters.get("allow_spinning", "1") in ("1", "true"),
        "runtime": parameters.get("runtime"),
        "precision": parameters.get("precision", "fp32"),
    }
