"""Architecture registry: `@register_model` variants, `create_model(name, **overrides)`, `list_models()`.

Each model family file registers small named variants (timm style): a function that takes keyword
overrides and returns the built module. `create_model` is the one public constructor.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

from attnserve.errors import UnknownModelError

ModelFactory = Callable[..., nn.Module]
_Factory = TypeVar("_Factory", bound=ModelFactory)

_MODEL_FACTORIES: dict[str, ModelFactory] = {}
_MODEL_FAMILIES: dict[str, str] = {}


def register_model(factory: _Factory) -> _Factory:
    """Register a variant under its function name (decorator).

    Args:
        factory: A function `(**overrides) -> nn.Module`; its `__name__` becomes the registry name.

    Returns:
        The factory, unchanged.

    Raises:
        ValueError: When the name is already registered by another function.
    """
    name = factory.__name__
    known = _MODEL_FACTORIES.get(name)
    if known is not None and known is not factory:
        raise ValueError(f"model {name!r} is already registered by {known.__module__}")
    _MODEL_FACTORIES[name] = factory
    _MODEL_FAMILIES[name] = factory.__module__.rsplit(".", 1)[-1]
    return factory


def _import_families() -> None:
    # Importing the family modules runs their @register_model decorators.
    from attnserve.models import cnn_attention, detector, video_transformer, vision_transformer  # noqa: F401


def list_models(family: str | None = None) -> list[str]:
    """Sorted registry names, optionally only those of one family file (e.g. `"vision_transformer"`)."""
    _import_families()
    return sorted(name for name in _MODEL_FACTORIES if family is None or _MODEL_FAMILIES[name] == family)


def model_family(name: str) -> str:
    """The family file (module name) a registered architecture lives in."""
    _import_families()
    if name not in _MODEL_FAMILIES:
        raise UnknownModelError(name, list(_MODEL_FACTORIES))
    return _MODEL_FAMILIES[name]


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build a registered architecture with random weights.

    Args:
        name: A registry name from `list_models()`, e.g. `"vit_tiny_patch16_224"`.
        **overrides: Constructor arguments that replace the variant's defaults (e.g. `depth=1, embed_dim=16`).

    Returns:
        The model, in train mode (call `.eval()` for inference).

    Raises:
        UnknownModelError: When `name` is not registered (the message lists the known names).
    """
    _import_families()
    factory = _MODEL_FACTORIES.get(name)
    if factory is None:
        raise UnknownModelError(name, list(_MODEL_FACTORIES))
    return factory(**overrides)


_TINY_BY_FAMILY: dict[str, dict[str, Any]] = {
    "vision_transformer": dict(embed_dim=16, depth=1, num_heads=2, stem_width=8),
    "cnn_attention": dict(widths=(8, 16)),
    "video_transformer": dict(embed_dim=16, depth=1, num_heads=2, stem_width=8),
    "detector": dict(embed_dim=16, depth=1, num_heads=2, stem_width=8),
}


def tiny_arch_overrides(name: str) -> dict[str, Any]:
    """Architecture overrides that make a deployable (or registry architecture) tiny, for fast tests.

    Use as `default_spec(name, **tiny_arch_overrides(name))` or `create_model(arch, **tiny_arch_overrides(arch))`.
    """
    from attnserve.catalogue import DEPLOYABLES

    arch = DEPLOYABLES[name].arch if name in DEPLOYABLES else name
    return dict(_TINY_BY_FAMILY.get(model_family(arch), {}))
