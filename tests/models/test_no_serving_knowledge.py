"""The models package knows architectures, data and training, not how a model is served: no module under
models/ names a field of the spec's `serving` or `runtime` sections, or imports those sections."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from attnserve.spec import RuntimeSection, ServingSection

MODELS = Path(__file__).resolve().parents[2] / "models"
SERVING_WORDS = sorted({*ServingSection.model_fields, *RuntimeSection.model_fields, "ServingSection", "RuntimeSection",
                        "with_serving", "with_runtime", "opt_batch_size"})  # fmt: skip


@pytest.mark.parametrize("module", sorted(MODELS.rglob("*.py")), ids=lambda path: path.name)
def test_no_module_of_models_holds_serving_knowledge(module: Path) -> None:
    text = module.read_text()
    found = [word for word in SERVING_WORDS if re.search(rf"\b{word}\b", text)]
    assert not found, f"models/{module.name} names serving/runtime knowledge {found}: it belongs to attnserve.catalogue"
    assert not re.search(r"\.(serving|runtime)\b", text), f"models/{module.name} reads a spec's serving/runtime"
