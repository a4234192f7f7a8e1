"""attnserve.export: PyTorch -> verified ONNX -> ORT-optimised / fp16 / TensorRT, and Triton repository entries.

Never starts a server.
"""
