"""Import a Hugging Face object detector (DETR, YOLOS: `*ForObjectDetection`) from local files, offline.

The wrapper takes uint8 pixels `(B, 3, H, W)`, normalises inside like every model of the project, runs the
detector and returns the project's fixed-size detection candidates (`attnserve.spec.DETECTION_OUTPUTS`), one
per object query, best first: `boxes` `[x0, y0, x1, y1]` in input pixels, `scores`, `classes`. The scores and
classes are what `post_process_object_detection` of the Transformers image processors computes (softmax over the
classes, the "no object" class left out, the best class per query), and so are the boxes (centre/size
relative to the input, turned into corners and scaled); the served pipeline's post-processing then keeps those
above its threshold and scales them to the original image. One difference, on purpose: served boxes are clipped
to the image, Transformers' are not.

DETR needs a transformers-native backbone here (`use_timm_backbone=False`: timm does not import on this CPU-only
torch; docs/measured.md#timm). The input size comes from `preprocessor_config.json` (`size` with `height` and
`width`: the exported graph has a fixed input size; YOLOS interpolates its position embeddings for it).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from attnserve.errors import UserInputError
from attnserve.spec import IoSection, ModelSpec, ServingSection, preferred_batch_sizes_up_to


class HFDetector(nn.Module):
    """uint8 pixels `(B, C, H, W)` -> (boxes (B, Q, 4) in input pixels, scores (B, Q), classes (B, Q)), best first."""

    def __init__(self, hf_model: nn.Module, mean: tuple[float, ...], std: tuple[float, ...], height: int,
                 width: int) -> None:  # fmt: skip
        super().__init__()
        self.hf_model = hf_model
        self.mean: torch.Tensor
        self.std: torch.Tensor
        self.scale: torch.Tensor
        self.register_buffer("mean", torch.tensor(mean).reshape(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).reshape(1, -1, 1, 1))
        self.register_buffer("scale", torch.tensor([width, height, width, height], dtype=torch.float32))

    def pixel_values(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels.float() / 255.0 - self.mean) / self.std

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        boxes, scores, classes, _ = self.candidates(self.hf_model(pixel_values=self.pixel_values(pixels)))
        return boxes, scores, classes

    def candidates(self, outputs: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(boxes, scores, classes) best first from the model's outputs, and the order (B, Q) that sorted them."""
        scores, classes = outputs.logits.softmax(-1)[..., :-1].max(-1)  # (B, Q): the last class is "no object"
        centre_x, centre_y, width, height = outputs.pred_boxes.unbind(-1)  # relative to the input
        corners = torch.stack([centre_x - width / 2, centre_y - height / 2, centre_x + width / 2,
                               centre_y + height / 2], dim=-1)  # fmt: skip
        order = scores.argsort(dim=1, descending=True)
        boxes = (corners * self.scale).gather(1, order[..., None].expand(-1, -1, 4))
        return boxes, scores.gather(1, order), classes.gather(1, order), order


class HFDetrDetector(HFDetector):
    """A DETR-style detector that also explains itself: each candidate's cross-attention map.

    `forward_with_attention` runs the same weights with eager attention (the only path that returns the softmax
    probabilities; a copy of the model, since DETR cannot switch back to SDPA: its ResNet backbone refuses) and adds, per object query, its last decoder layer's cross-attention over the encoder's feature
    grid, averaged over heads and scaled to max 1: which image regions that query read (B, Q, gh, gw), in the
    candidates' order. `forward` keeps SDPA, so the main graph stays fused.
    """

    def __init__(self, hf_model: nn.Module, eager_model: nn.Module, mean: tuple[float, ...], std: tuple[float, ...],
                 height: int, width: int, grid: tuple[int, int]) -> None:  # fmt: skip
        super().__init__(hf_model, mean, std, height, width)
        self.eager_model, self.grid = eager_model, grid

    def forward_with_attention(
        self, pixels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        from attnserve.models.layers import normalize_map

        outputs = self.eager_model(pixel_values=self.pixel_values(pixels), output_attentions=True)
        boxes, scores, classes, order = self.candidates(outputs)
        maps = outputs.cross_attentions[-1].mean(dim=1)  # (B, Q, gh * gw): heads averaged
        maps = maps.gather(1, order[..., None].expand(-1, -1, maps.shape[-1]))
        maps = normalize_map(maps.reshape(-1, *self.grid)).reshape(maps.shape[0], maps.shape[1], *self.grid)
        return boxes, scores, classes, maps


def _eager_twin(hf_model: nn.Module, height: int, width: int) -> tuple[nn.Module, tuple[int, int]] | None:
    """An eager-attention copy of a DETR-style model and the feature grid its queries cross-attend over (None: no
    cross-attention, e.g. YOLOS, or no eager path)."""
    import copy

    try:
        eager_model = copy.deepcopy(hf_model)
        eager_model.set_attn_implementation("eager")  # type: ignore[operator]
        with torch.no_grad():
            outputs = eager_model(pixel_values=torch.zeros(1, 3, height, width), output_attentions=True)
    except Exception:  # noqa: BLE001 - any failure means: no explain path for this architecture
        return None
    cross = getattr(outputs, "cross_attentions", None)
    if not cross:
        return None
    tokens = int(cross[-1].shape[-1])
    for stride in (2**k for k in range(1, 7)):
        grid = (-(-height // stride), -(-width // stride))
        if grid[0] * grid[1] == tokens:
            return eager_model.eval(), grid
    return None


def is_detection_config(config: Any) -> bool:
    """True for a `*ForObjectDetection` config (by `architectures`, else by the auto mapping)."""
    from transformers import MODEL_FOR_OBJECT_DETECTION_MAPPING

    architectures = getattr(config, "architectures", None) or []
    if any(architecture.endswith("ForObjectDetection") for architecture in architectures):
        return True
    return not architectures and type(config) in MODEL_FOR_OBJECT_DETECTION_MAPPING


def loads_a_detector(path: Path) -> bool:
    """Whether `path` (a folder or its config.json) holds a `*ForObjectDetection` model's config."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoConfig

    config_file = Path(path) if Path(path).is_file() else Path(path) / "config.json"
    if not config_file.is_file():
        return False
    try:
        return is_detection_config(AutoConfig.from_pretrained(str(config_file), local_files_only=True))
    except (ValueError, OSError, KeyError):
        return False  # the classifier import says what is wrong with it


def _queries(config: Any) -> int:
    queries = getattr(config, "num_queries", None) or getattr(config, "num_detection_tokens", None)
    if not isinstance(queries, int) or queries < 1:
        raise UserInputError(f"{config.model_type!r}: no num_queries / num_detection_tokens in config.json")
    return queries


def _input_size(preprocessor: dict[str, Any]) -> tuple[int, int]:
    size = preprocessor.get("size") or {}
    if not (isinstance(size, dict) and "height" in size and "width" in size):
        raise UserInputError(
            "a detector's preprocessor_config.json needs size {height, width}: the served graph takes one fixed "
            f"input size (got size {size!r}; DETR's default shortest_edge resizing varies it per image)"
        )
    return int(size["height"]), int(size["width"])


def load_hf_detector(path: Path, *, name: str, max_batch_size: int = 16) -> tuple[nn.Module, ModelSpec]:
    """Build a local `transformers` object detector (a `save_pretrained` folder with `preprocessor_config.json`).

    Args:
        path: The folder (config.json, model.safetensors, preprocessor_config.json).
        name: The deployable name.
        max_batch_size: The spec's max batch (its preferred batch sizes: the defaults that fit).

    Returns:
        `(HFDetector in eval mode, its spec)`: kind `detection`, `max_detections` = the model's object queries.

    Raises:
        UserInputError: Not a folder with weights and a fixed-size preprocessor, or not a detector.
    """
    import json

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoConfig, AutoModelForObjectDetection

    folder = Path(path)
    if not (folder / "config.json").is_file() or not sorted(folder.glob("*.safetensors")):
        raise UserInputError(f"a detector is imported from a save_pretrained folder with safetensors; got {folder}")
    config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
    preprocessor_file = folder / "preprocessor_config.json"
    preprocessor = json.loads(preprocessor_file.read_text()) if preprocessor_file.is_file() else {}
    height, width = _input_size(preprocessor)
    hf_model = AutoModelForObjectDetection.from_pretrained(str(folder), local_files_only=True, use_safetensors=True)
    id2label = {int(k): str(v) for k, v in (config.id2label or {}).items()}
    io = IoSection(
        layout="NCHW", input_shape=(3, height, width),
        mean=tuple(float(v) for v in preprocessor.get("image_mean", (0.485, 0.456, 0.406))),
        std=tuple(float(v) for v in preprocessor.get("image_std", (0.229, 0.224, 0.225))),
        labels=tuple(id2label[i] for i in sorted(id2label)), max_detections=_queries(config),
    )  # fmt: skip
    serving = ServingSection(
        max_batch_size=max_batch_size, preferred_batch_sizes=preferred_batch_sizes_up_to(max_batch_size)
    )
    spec = ModelSpec(
        name=name, arch=f"hf:{config.model_type}", arch_args={"path": str(folder.resolve())}, kind="detection",
        io=io, serving=serving, trained=True,
    )  # fmt: skip
    twin = _eager_twin(hf_model.eval(), height, width)
    if twin is None:
        return HFDetector(hf_model, spec.io.mean, spec.io.std, height, width).eval(), spec
    return HFDetrDetector(hf_model, twin[0], spec.io.mean, spec.io.std, height, width, twin[1]).eval(), spec
