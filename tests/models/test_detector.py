"""The detector, tiny: candidate shapes, batch independence, input checks, exact decoding geometry, scenes, loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attnserve.catalogue import DETECTION_LABELS, default_spec
from attnserve.errors import DTypeError, ShapeError
from attnserve.models import create_model
from attnserve.models.detector import OUTPUT_STRIDE, decode, detection_loss, heads_targets
from attnserve.models.registry import tiny_arch_overrides
from attnserve.models.scenes import Scene, SceneObject, coco_ground_truth, make_scenes, render, render_batch

SIZE = (64, 96)


@pytest.fixture(scope="module")
def tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("vit_centernet", img_size=SIZE, max_detections=7, **tiny_arch_overrides("vit_centernet")).eval()


def _pixels(batch: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (batch, 3, *SIZE), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_fixed_size_candidates_best_first(tiny: torch.nn.Module) -> None:
    with torch.inference_mode():
        boxes, scores, classes = tiny(_pixels(3))
    assert boxes.shape == (3, 7, 4) and scores.shape == (3, 7) and classes.shape == (3, 7)
    assert classes.dtype == torch.int64 and int(classes.max()) < 3
    assert (scores[:, :-1] >= scores[:, 1:]).all() and torch.isfinite(boxes).all()


def test_batch_independence(tiny: torch.nn.Module) -> None:
    pixels = _pixels(4)
    with torch.inference_mode():
        alone = tiny(pixels[:1])
        together = tiny(pixels)
    for one, batched in zip(alone, together, strict=True):
        torch.testing.assert_close(batched[:1], one, atol=1e-5, rtol=1e-4)


def test_wrong_inputs_are_refused(tiny: torch.nn.Module) -> None:
    with pytest.raises(ShapeError, match="expected"):
        tiny(_pixels(1)[..., :-1])
    with pytest.raises(DTypeError, match="uint8"):
        tiny(_pixels(1).float())
    with pytest.raises(ValueError, match="divisible by 8"):
        create_model("vit_centernet", img_size=(60, 96))


def test_decoding_turns_exact_targets_into_exact_boxes() -> None:
    """Targets built from known boxes, decoded as if predicted: the same boxes and classes come back."""
    boxes = [torch.tensor([[10.0, 6.0, 34.0, 30.0], [50.0, 20.0, 90.0, 60.0]]), torch.zeros((0, 4))]
    labels = [torch.tensor([2, 0]), torch.zeros(0, dtype=torch.int64)]
    heat, log_size, offset, mask = heads_targets(boxes, labels, 3, *SIZE)
    assert heat.shape == (2, 3, SIZE[0] // OUTPUT_STRIDE, SIZE[1] // OUTPUT_STRIDE) and int(mask.sum()) == 2
    logits = torch.logit(heat.clamp(1e-6, 1 - 1e-6))
    found, scores, classes = decode(logits, log_size, offset, max_detections=2)
    order = found[0, :, 0].argsort()
    torch.testing.assert_close(found[0][order], boxes[0], atol=1e-4, rtol=0)
    assert classes[0][order].tolist() == [2, 0] and scores[0].min() > 0.99
    assert scores[1].max() < 1e-3  # nothing in the empty image


def test_scenes_are_reproducible_and_their_boxes_are_exact_at_any_size() -> None:
    scenes = make_scenes(40, seed=3)
    assert scenes == make_scenes(40, seed=3)
    assert any(not scene.objects for scene in make_scenes(200, seed=3))  # 5% of scenes hold no object
    assert max(len(scene.objects) for scene in scenes) > 1
    one = Scene((SceneObject(1, (0.25, 0.25, 0.5, 0.75), (255, 255, 255)),), (0, 0, 0), 1)
    for width, height in ((96, 64), (300, 120)):
        image = np.asarray(render(one, width, height)).max(axis=2) > 127
        ys, xs = np.nonzero(image)
        expected = one.boxes(width, height)[0]
        np.testing.assert_allclose([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], expected, atol=1.0)
    truth = coco_ground_truth(scenes[:3], [(96, 64)] * 3)
    assert [c["name"] for c in truth["categories"]] == list(DETECTION_LABELS)
    assert render_batch(scenes[:2], 96, 64).shape == (2, 3, 64, 96)


def test_a_few_steps_reduce_the_loss() -> None:
    torch.manual_seed(0)
    spec = default_spec("det_shapes", **tiny_arch_overrides("det_shapes"))
    model = create_model(spec.arch, img_size=SIZE, **tiny_arch_overrides("det_shapes")).train()
    scenes = make_scenes(16, seed=1)
    pixels = torch.from_numpy(render_batch(scenes, 96, 64))
    targets = heads_targets([torch.from_numpy(s.boxes(96, 64)).float() for s in scenes],
                            [torch.from_numpy(s.labels()) for s in scenes], 3, *SIZE)  # fmt: skip
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        loss = detection_loss(model.forward_heads(pixels), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] * 0.7, losses
