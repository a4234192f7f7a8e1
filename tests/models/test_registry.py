"""Every registered architecture, tiny: shapes, batch independence, explain path, input checks, export."""

from __future__ import annotations

import copy

import pytest
import torch

from attnserve.catalogue import DEPLOYABLE_NAMES
from attnserve.errors import DTypeError, ShapeError, UnknownModelError
from attnserve.models import create_model, list_models
from attnserve.models.registry import model_family, tiny_arch_overrides

ARCHITECTURES = [arch for arch in list_models() if model_family(arch) != "detector"]
"""The classifiers (logits out); the detector (boxes out) has its own tests in test_detector.py."""


def _tiny(arch: str) -> torch.nn.Module:
    torch.manual_seed(0)
    overrides = tiny_arch_overrides(arch)
    if arch.endswith("_224"):
        overrides["img_size"] = 64  # keep the 224 benchmark variants cheap in tests
    return create_model(arch, num_classes=5, **overrides).eval()


def _pixels(model: torch.nn.Module, batch: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, *model.input_shape), dtype=torch.uint8, generator=generator)


@pytest.fixture(scope="module", params=ARCHITECTURES)
def tiny_model(request: pytest.FixtureRequest) -> torch.nn.Module:
    return _tiny(request.param)


def test_registry_has_every_family() -> None:
    assert "vit_tiny_patch16_224" in ARCHITECTURES
    for family in ("vision_transformer", "cnn_attention", "video_transformer"):
        assert list_models(family), family


def test_unknown_name_lists_known_names() -> None:
    with pytest.raises(UnknownModelError, match="vit_tiny_patch16_224"):
        create_model("vit_huge_nonexistent")


def test_vit_tiny_patch16_224_is_the_standard_architecture() -> None:
    model = create_model("vit_tiny_patch16_224")
    assert model.input_shape == (3, 224, 224) and model.num_classes == 1000
    assert len(model.blocks) == 12 and model.blocks[0].attn.num_heads == 3 and model.pos_embed.shape == (1, 197, 192)
    assert 5.5e6 < sum(p.numel() for p in model.parameters()) < 5.9e6  # ViT-Ti/16: 5.7 M parameters


def test_output_shape_and_finite(tiny_model: torch.nn.Module) -> None:
    with torch.inference_mode():
        logits = tiny_model(_pixels(tiny_model, 3))
    assert logits.shape == (3, 5) and logits.dtype == torch.float32
    assert torch.isfinite(logits).all() and logits.std() > 0


def test_batch_independence(tiny_model: torch.nn.Module) -> None:
    pixels = _pixels(tiny_model, 4)
    others = _pixels(tiny_model, 4, seed=1)
    with torch.inference_mode():
        alone = tiny_model(pixels[:1])
        with_batch = tiny_model(torch.cat([pixels[:1], others[1:]]))
        reordered = tiny_model(pixels.flip(0))
    torch.testing.assert_close(with_batch[:1], alone, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(reordered.flip(0), tiny_model(pixels).detach(), atol=1e-5, rtol=1e-4)


def test_features_head_split(tiny_model: torch.nn.Module) -> None:
    pixels = _pixels(tiny_model, 2)
    with torch.inference_mode():
        torch.testing.assert_close(tiny_model.forward_head(tiny_model.forward_features(pixels)), tiny_model(pixels))


def test_forward_with_attention_matches_forward(tiny_model: torch.nn.Module) -> None:
    pixels = _pixels(tiny_model, 3)
    with torch.inference_mode():
        logits = tiny_model(pixels)
        explained, attention_map = tiny_model.forward_with_attention(pixels)
    torch.testing.assert_close(explained, logits, atol=1e-5, rtol=1e-4)
    expected_rank = 4 if len(tiny_model.input_shape) == 4 else 3  # video (B, T, gh, gw), image (B, h, w)
    assert attention_map.dim() == expected_rank and attention_map.shape[0] == 3
    if expected_rank == 4:
        assert attention_map.shape[1] == tiny_model.input_shape[0]
    assert attention_map.dtype == torch.float32 and (attention_map >= 0).all()
    torch.testing.assert_close(attention_map.flatten(1).amax(dim=1), torch.ones(3))


def test_wrong_shape_names_expected_and_received(tiny_model: torch.nn.Module) -> None:
    good = _pixels(tiny_model, 2)
    wrong = good[..., :-1]  # one column short
    expected = str(tuple(tiny_model.input_shape)[1:-1])[1:-1]  # e.g. "1, 32" of ('B', 1, 32, 32)
    with pytest.raises(ShapeError) as caught:
        tiny_model(wrong)
    message = str(caught.value)
    assert str(tuple(wrong.shape)) in message and expected in message and "expected" in message
    with pytest.raises(ShapeError):
        tiny_model(good[0])  # batch dimension missing
    with pytest.raises(DTypeError, match="uint8"):
        tiny_model(good.float())


def test_normalisation_uses_registered_buffers(tiny_model: torch.nn.Module) -> None:
    buffers = dict(tiny_model.named_buffers())
    assert "normalize.mean" in buffers and "normalize.std" in buffers
    zeros = torch.zeros((1, *tiny_model.input_shape), dtype=torch.uint8)
    normalised = tiny_model.normalize(zeros)
    torch.testing.assert_close(
        normalised, (-buffers["normalize.mean"] / buffers["normalize.std"]).expand_as(normalised)
    )


def test_backward_reaches_every_parameter(tiny_model: torch.nn.Module) -> None:
    model = copy.deepcopy(tiny_model).train()  # a copy: train mode updates BatchNorm statistics
    model(_pixels(model, 2)).square().sum().backward()
    missing = [name for name, parameter in model.named_parameters() if parameter.grad is None]
    assert not missing


@pytest.mark.parametrize("name", DEPLOYABLE_NAMES)
def test_the_catalogue_builds_the_model_the_flat_recipe_built(name: str) -> None:
    """The catalogue states only the arguments that differ from an architecture's defaults: the module is the same
    as the one built from the recipe that spelled them all out (tests/data/spec_v1)."""
    from pathlib import Path

    from attnserve.catalogue import default_spec
    from attnserve.models.checkpoint import build_model
    from attnserve.spec import ModelSpec

    before = ModelSpec.load(Path(__file__).parents[1] / "data" / "spec_v1" / f"{name}.spec.json")
    now, then = build_model(default_spec(name)), build_model(before)
    assert repr(now) == repr(then)
    assert {k: v.shape for k, v in now.state_dict().items()} == {k: v.shape for k, v in then.state_dict().items()}
