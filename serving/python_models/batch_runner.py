"""Run one Triton batch of requests through a `Session`: validate each request, run once, split back.

Triton hands a python-backend model several requests at once (dynamic batching). Each request may carry
several samples. A request that does not match the model's inputs fails alone; the others are
concatenated along the batch axis, run in one session call, and split back per request.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from attnserve.dtypes import CONFIG_TO_NUMPY
from attnserve.errors import AttnserveError, DTypeError, RuntimeFailure, ShapeError

logger = logging.getLogger(__name__)

TRITON_TO_NUMPY = CONFIG_TO_NUMPY
"""`config.pbtxt` data type -> numpy dtype (`attnserve.dtypes`, the one table)."""


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a batched model: name, numpy dtype and per-sample dims (-1 = any size)."""

    name: str
    dtype: np.dtype
    dims: tuple[int, ...]

    @classmethod
    def from_config(cls, tensor: Mapping[str, Any]) -> TensorSpec:
        """From one `input`/`output` entry of Triton's JSON model config (`args["model_config"]`)."""
        data_type = str(tensor["data_type"])
        if data_type not in TRITON_TO_NUMPY:
            raise DTypeError(f"unsupported Triton data type {data_type!r}; expected one of {sorted(TRITON_TO_NUMPY)}")
        dims = tensor.get("reshape", {}).get("shape") if isinstance(tensor.get("reshape"), dict) else None
        return cls(
            name=str(tensor["name"]),
            dtype=TRITON_TO_NUMPY[data_type],
            dims=tuple(int(d) for d in (dims or tensor["dims"])),  # type: ignore[union-attr]
        )

    def narrowed(self, model_dims: Sequence[int] | None) -> TensorSpec:
        """This tensor with the config's variable dims (-1) fixed where the model fixes them (-1 = variable)."""
        if model_dims is None or len(model_dims) != len(self.dims):
            return self
        dims = tuple(m if d == -1 else d for d, m in zip(self.dims, model_dims, strict=True))
        return TensorSpec(self.name, self.dtype, dims)

    def check(self, array: np.ndarray) -> None:
        """Raise ShapeError / DTypeError when `array` (B, *dims) does not fit this tensor."""
        if array.dtype != self.dtype:
            raise DTypeError(f"input {self.name!r}: expected dtype {self.dtype}, got {array.dtype}")
        sample_shape = tuple(array.shape[1:])
        fits = len(sample_shape) == len(self.dims) and all(d in (-1, s) for d, s in zip(self.dims, sample_shape))
        if array.ndim < 1 or not fits:
            raise ShapeError(
                f"input {self.name!r}: expected shape (batch, {', '.join(map(str, self.dims))}), "
                f"got {tuple(array.shape)}"
            )


RequestInputs = Mapping[str, np.ndarray] | AttnserveError
"""What one request brings: its input arrays, or the error met while reading them."""
RequestResult = dict[str, np.ndarray] | AttnserveError


def run_requests(
    session_run: object,
    requests: Sequence[RequestInputs],
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
) -> list[RequestResult]:
    """Run a Triton batch: one result per request, in order (arrays or the error for that request only).

    Args:
        session_run: `Session.run` (named arrays in, named arrays out, batch first).
        requests: per request, its input arrays `{name: (b_i, *dims)}`, or an error met while reading it.
        inputs: the model's inputs (dtype and per-sample dims are checked per request).
        outputs: the outputs to return, cast to their configured dtype.
    """
    results: list[RequestResult | None] = [None] * len(requests)
    good: list[int] = []
    for position, request in enumerate(requests):
        if isinstance(request, AttnserveError):
            results[position] = request
            continue
        try:
            for tensor in inputs:
                if tensor.name not in request:
                    raise ShapeError(f"missing input {tensor.name!r}; expected inputs {[t.name for t in inputs]}")
                tensor.check(request[tensor.name])
            sizes = {len(request[t.name]) for t in inputs}
            if len(sizes) != 1:
                raise ShapeError(f"inputs disagree on the batch size: {sorted(sizes)}")
        except AttnserveError as exc:
            results[position] = exc
            continue
        good.append(position)

    if good:
        batch = {t.name: np.concatenate([requests[p][t.name] for p in good], axis=0) for t in inputs}  # type: ignore[index]
        try:
            produced = session_run(batch)  # type: ignore[operator]
            merged = {t.name: np.asarray(produced[t.name]).astype(t.dtype, copy=False) for t in outputs}
        except Exception as exc:
            logger.exception("inference of a batch of %d request(s) failed", len(good))
            failure = RuntimeFailure(f"inference failed: {type(exc).__name__}: {exc}")
            for position in good:
                results[position] = failure
        else:
            start = 0
            for position in good:
                size = len(requests[position][inputs[0].name])  # type: ignore[index]
                results[position] = {name: array[start : start + size] for name, array in merged.items()}
                start += size
    return [result for result in results if result is not None]
