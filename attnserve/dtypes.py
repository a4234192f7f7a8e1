"""The one table of Triton tensor datatypes and their numpy dtypes.

Triton names a datatype `UINT8` in requests and metadata (KServe protocol) and `TYPE_UINT8` in `config.pbtxt`;
`BYTES` is `TYPE_STRING` there and travels as numpy object arrays of bytes. Clients, the CPU runner and the
repository layer all read this table (it imports only numpy).
"""

from __future__ import annotations

import numpy as np

TRITON_TO_NUMPY: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(np.object_),
}
"""Triton datatype (request / metadata name) -> numpy dtype."""


def config_data_type(datatype: str) -> str:
    """The `config.pbtxt` name of a Triton datatype: `UINT8` -> `TYPE_UINT8`, `BYTES` -> `TYPE_STRING`."""
    return "TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}"


CONFIG_TO_NUMPY: dict[str, np.dtype] = {config_data_type(name): dtype for name, dtype in TRITON_TO_NUMPY.items()}
"""`config.pbtxt` data type -> numpy dtype."""
