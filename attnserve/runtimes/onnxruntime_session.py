"""The ONNX Runtime CPU session (runtime `onnxruntime`, the default)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnxruntime as ort

from attnserve.runtimes.session import parse_allow_spinning, require_inputs


class OnnxRuntimeSession:
    """An ONNX Runtime CPU session behind the `Session` interface.

    Args:
        model_path: the `.onnx` file (external data beside it is found by ONNX Runtime).
        intra_op_threads: threads for one operator (cores // instances of this model).
        options: entry parameters; this runtime reads `allow_spinning` (`"0"` stops idle intra-op threads
            from spin-waiting; default on, as ONNX Runtime's); other keys are ignored.
    """

    def __init__(self, model_path: Path, *, intra_op_threads: int, options: Mapping[str, str] | None = None) -> None:
        session_options = ort.SessionOptions()
        session_options.intra_op_num_threads = intra_op_threads
        session_options.inter_op_num_threads = 1  # one request batch at a time per instance
        session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.allow_spinning = parse_allow_spinning(options or {})
        # Spinning threads burn a core while they wait for the next operator; on a machine whose cores Triton and
        # the clients share, that time is taken from them (https://onnxruntime.ai/docs/performance/tune-performance/threading.html)
        session_options.add_session_config_entry("session.intra_op.allow_spinning", "1" if self.allow_spinning else "0")
        self.intra_op_threads = intra_op_threads
        self.model_path = Path(model_path)
        self._session = ort.InferenceSession(
            str(self.model_path), sess_options=session_options, providers=["CPUExecutionProvider"]
        )
        self._input_names = tuple(i.name for i in self._session.get_inputs())
        self._output_names = tuple(o.name for o in self._session.get_outputs())

    @property
    def input_names(self) -> tuple[str, ...]:
        return self._input_names

    @property
    def output_names(self) -> tuple[str, ...]:
        return self._output_names

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = self._session.run(list(self._output_names), require_inputs(self._input_names, inputs))
        return dict(zip(self._output_names, outputs, strict=True))


def open_session(model_path: Path, *, intra_op_threads: int, options: Mapping[str, str]) -> OnnxRuntimeSession:
    """The `runtime` module entry point (see `attnserve.runtimes.session`)."""
    return OnnxRuntimeSession(model_path, intra_op_threads=intra_op_threads, options=options)
