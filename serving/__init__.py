"""attnserve.serving: the embedded Triton server (binary from the nvidia-pytriton wheel), the runtime view of
the model repository, and python-backend models (ONNX Runtime runner, pre-processing).

Contains no model math.
"""
