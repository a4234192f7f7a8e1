"""The models stay traceable with a symbolic batch (what torch.onnx.export(dynamo=True) runs first),
shape check included: one tiny deployable per family, fused and explain paths."""

from __future__ import annotations

import pytest
import torch

from attnserve.catalogue import default_spec
from attnserve.models.checkpoint import build_model
from attnserve.models.registry import tiny_arch_overrides


class _Explain(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.forward_with_attention(pixels)


@pytest.mark.parametrize("name", ["vit_digits", "cnn_cbam_digits", "timesformer_motion"])
@pytest.mark.parametrize("explain", [False, True], ids=["fused", "explain"])
def test_torch_export_with_symbolic_batch(name: str, explain: bool) -> None:
    torch.manual_seed(0)
    spec = default_spec(name, **tiny_arch_overrides(name))
    model = build_model(spec)
    module = _Explain(model) if explain else model
    pixels = torch.randint(0, 256, (2, *spec.io.input_shape), dtype=torch.uint8)
    batch = torch.export.Dim("batch", min=1, max=spec.serving.max_batch_size)
    exported = torch.export.export(module, (pixels,), dynamic_shapes={"pixels": {0: batch}})
    other_batch = torch.randint(0, 256, (3, *spec.io.input_shape), dtype=torch.uint8)
    with torch.inference_mode():
        expected, actual = module(other_batch), exported.module()(other_batch)
    for want, got in zip(expected if explain else (expected,), actual if explain else (actual,)):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
