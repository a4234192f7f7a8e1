"""attnserve: attention vision models from PyTorch to a Triton server.

Sub-packages (each maps to a top-level folder of the repository):
    attnserve.models   -> models/    layers, classifiers, video models, data, training
    attnserve.export   -> export/    torch -> ONNX (verified), ORT optimisation, TensorRT, repository
    attnserve.serving  -> serving/   the embedded Triton server and python-backend models
    attnserve.clients  -> clients/   typed clients, `infer` and `loadtest` (no torch import)
"""

__version__ = "0.1.0"
