"""attnserve.models: attention layers, image classifiers, video models, the registry, data and training.

Knows nothing of ONNX, Triton or clients. Public entry points:

- `create_model(name, **overrides)` / `list_models()`: the architecture registry.
- `attnserve.models.deployables`: `DEPLOYABLE_NAMES`, `default_spec(name, **arch_overrides)`.
- `attnserve.models.checkpoint`: `build_model`, `save_run`, `load_run`, `resolve`.
- `attnserve.models.data`: datasets, `sample_inputs`, `write_samples`.
- `attnserve.models.train`: `train(name, ...)`.
"""

from attnserve.models.registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model"]
