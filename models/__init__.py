"""attnserve.models: attention layers, image classifiers, video models, the registry, data and training.

Knows nothing of ONNX, Triton or clients, nor how a model is served: the deployables and their serving
sections are `attnserve.catalogue` (`DEPLOYABLE_NAMES`, `default_spec(name, **arch_overrides)`).
Public entry points:

- `create_model(name, **overrides)` / `list_models()`: the architecture registry.
- `attnserve.models.registry.tiny_arch_overrides(name)`: overrides that make a deployable tiny, for fast tests.
- `attnserve.models.checkpoint`: `build_model`, `save_run`, `load_run`, `resolve`.
- `attnserve.models.data`: datasets, `sample_inputs`, `write_samples`.
- `attnserve.models.train`: `train(TrainOptions(name, ...))`.

The names below load lazily, so `attnserve.models.folders` or `.synthetic` can be used without torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_model", "list_models", "register_model"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from attnserve.models import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'attnserve.models' has no attribute {name!r}")
