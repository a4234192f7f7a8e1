"""attnserve.models: attention layers, image classifiers, video models, the registry, data and training.

Knows nothing of ONNX, Triton or clients.
"""
