"""Python-backend models and the plain modules behind them.

The `model.py` files Triton loads are thin shims (`*_model.py` here, copied into a repository entry as
`1/model.py`); the logic lives in plain modules (`runtime`, `onnx_runner`, `batch_runner`, `preprocess`)
that tests import without Triton.
"""
