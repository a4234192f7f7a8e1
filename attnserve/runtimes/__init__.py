"""attnserve.runtimes: the CPU inference sessions (ONNX Runtime, OpenVINO) behind one `Session` interface.

Imports neither torch nor Triton, so the export (timing CPU variants) and the serving runner (inside Triton's
python-backend stub) both use it without importing each other. See `session` for the interface.
"""
