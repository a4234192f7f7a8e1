"""Import a Hugging Face `transformers` image or video classifier from local files, offline, as a deployable model.

`PATH` is a `save_pretrained` folder (config.json + model.safetensors [+ preprocessor_config.json]) or a
bare `config.json` (random weights: export tests and architecture checks). Nothing is ever downloaded:
`HF_HUB_OFFLINE=1` is set and every load is `local_files_only`. Weights load only from safetensors.

The wrapper takes uint8 pixels `(B, C, H, W)` (video: `(B, T, C, H, W)`, the `pixel_values` layout of
VideoMAE, TimeSformer and ViViT) and normalises inside, like every model of this project, so the exported
graph has the same contract (`pixels` -> `logits`). Video classifiers are recognised from the config
(`*ForVideoClassification`); their frame count comes from `num_frames`.

Random weights are made non-degenerate: some architectures (MobileViT) initialise BatchNorm scales with
std 0.02 and their logits collapse to ~1e-41, which would make any parity check vacuous. For random
weights only, norm layers are reset to identity and BatchNorm statistics are calibrated on random pixels.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from attnserve.errors import UserInputError
from attnserve.hf_preprocessing import input_steps
from attnserve.models.hf_classifier import HFImageClassifier
from attnserve.spec import IoSection, ModelSpec, ServingSection, preferred_batch_sizes_up_to

logger = logging.getLogger(__name__)

SDPA_UNSUPPORTED_HINT = "eager"


class HFVideoClassifier(nn.Module):
    """uint8 clips `(B, T, C, H, W)` -> logits `(B, num_classes)` around a `*ForVideoClassification` model."""

    no_explain_reason = (
        ": its attention is not one map over all space-time tokens (TimeSformer's divided attention attends over "
        "time and over space in separate steps)"
    )

    def __init__(self, hf_model: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.hf_model = hf_model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 1, -1, 1, 1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        pixel_values = (pixels.float() / 255.0 - self.mean) / self.std  # (B, T, C, H, W)
        return self.hf_model(pixel_values=pixel_values).logits


def _eager_outputs(hf_model: nn.Module, pixel_values: torch.Tensor) -> Any:
    """The model's outputs with `output_attentions` under eager attention (the only path that returns the softmax
    probabilities); its own attention implementation (SDPA where it has one) is restored afterwards."""
    implementation = hf_model.config._attn_implementation
    hf_model.set_attn_implementation("eager")
    try:
        return hf_model(pixel_values=pixel_values, output_attentions=True)
    finally:
        hf_model.set_attn_implementation(implementation)


def _probe_attentions(hf_model: nn.Module, input_shape: tuple[int, ...]) -> Any:
    """Every block's attention probabilities on one zero sample `(1, *input_shape)`, or None when the
    architecture cannot give them."""
    try:
        with torch.no_grad():
            outputs = _eager_outputs(hf_model, torch.zeros(1, *input_shape))
    except Exception:  # noqa: BLE001 - any failure means: no explain path for this architecture
        return None
    return getattr(outputs, "attentions", None)


class HFVideoExplainClassifier(HFVideoClassifier):
    """A video classifier whose every block attends over all space-time tokens (VideoMAE, ViViT): explainable.

    `forward_with_attention` runs the same weights with eager attention and gives the attention rollout of
    the read-out over the (tubelet, patch) tokens: from the class token (ViViT) or averaged over all tokens
    (VideoMAE's mean pooling), as per-frame maps `(B, T, gh, gw)` (a tubelet's map repeated over its frames),
    scaled to max 1 over the clip, so each frame's sum is its temporal weight.
    """

    def __init__(
        self,
        hf_model: nn.Module,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        tokens: tuple[int, int, int],
        special_tokens: int,
    ) -> None:
        super().__init__(hf_model, mean, std)
        self.tokens = tokens  # (tubelets in time, gh, gw)
        self.special_tokens = special_tokens

    def forward_with_attention(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from attnserve.models.layers import attention_rollout, normalize_map

        pixel_values = (pixels.float() / 255.0 - self.mean) / self.std  # (B, T, C, H, W)
        outputs = _eager_outputs(self.hf_model, pixel_values)
        rollout = attention_rollout(outputs.attentions)  # (B, N, N), N = special + t * gh * gw
        if self.special_tokens:
            importance = rollout[:, 0, self.special_tokens :]  # (B, t*gh*gw): what the class token reads
        else:
            importance = rollout.mean(dim=1)  # (B, t*gh*gw): mean pooling reads every token alike
        maps = importance.reshape(-1, *self.tokens)  # (B, t, gh, gw)
        frames = pixels.shape[1]
        maps = maps.repeat_interleave(frames // self.tokens[0], dim=1)  # (B, T, gh, gw)
        return outputs.logits, normalize_map(maps)


def _video_tokens(hf_model: nn.Module, input_shape: tuple[int, ...]) -> tuple[tuple[int, int, int], int] | None:
    """`((t, gh, gw), special tokens)` when every block attends over all space-time tokens, else None
    (TimeSformer's divided attention has no single space-time map)."""
    config = hf_model.config
    patch = getattr(config, "patch_size", None)
    tubelet = getattr(config, "tubelet_size", None)
    if isinstance(tubelet, (list, tuple)):  # ViViT: [t, h, w]
        tubelet, patch = tubelet[0], tubelet[1]
    if not isinstance(patch, int) or not isinstance(tubelet, int) or not hasattr(hf_model, "set_attn_implementation"):
        return None
    frames, _, height, width = input_shape
    tokens = (frames // tubelet, height // patch, width // patch)
    attentions = _probe_attentions(hf_model, input_shape)
    if frames % tubelet or not attentions or attentions[0].dim() != 4 or attentions[0].shape[0] != 1:
        return None
    special = attentions[0].shape[-1] - tokens[0] * tokens[1] * tokens[2]
    if special not in (0, 1) or any(a.shape[-1] != attentions[0].shape[-1] for a in attentions):
        return None
    return tokens, special


class HFViTClassifier(HFImageClassifier):
    """A ViT-like classifier (class token(s) + patch grid) that can also explain itself.

    `forward_with_attention` runs the same weights with eager attention (the only path that returns the
    softmax probabilities) and gives the CLS-to-patch attention rollout `(B, gh, gw)`, scaled to max 1,
    like the project's own ViTs. `forward` keeps SDPA, so the main graph stays fused.
    """

    def __init__(
        self, hf_model: nn.Module, mean: tuple[float, ...], std: tuple[float, ...], grid: tuple[int, int]
    ) -> None:
        super().__init__(hf_model, mean, std)
        self.grid = grid

    def forward_with_attention(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from attnserve.models.layers import attention_rollout, normalize_map

        pixel_values = (pixels.float() / 255.0 - self.mean) / self.std  # (B, C, H, W)
        outputs = _eager_outputs(self.hf_model, pixel_values)
        rollout = attention_rollout(outputs.attentions)  # (B, N, N), N = special tokens + gh * gw
        patches = self.grid[0] * self.grid[1]
        cls_to_patches = rollout[:, 0, -patches:].reshape(-1, *self.grid)  # (B, gh, gw)
        return outputs.logits, normalize_map(cls_to_patches)


def _vit_grid(hf_model: nn.Module, input_shape: tuple[int, ...]) -> tuple[int, int] | None:
    """The patch grid when the model is ViT-like (attentions over 1-2 class tokens + the patch grid), else None."""
    patch_size = getattr(hf_model.config, "patch_size", None)
    if not isinstance(patch_size, int) or not hasattr(hf_model, "set_attn_implementation"):
        return None
    grid = (input_shape[1] // patch_size, input_shape[2] // patch_size)
    attentions = _probe_attentions(hf_model, input_shape)
    if not attentions or attentions[0].dim() != 4:
        return None
    tokens = attentions[0].shape[-1]
    if any(a.shape[-1] != tokens for a in attentions) or tokens - grid[0] * grid[1] not in (1, 2):
        return None  # windowed (Swin) or hierarchical attention: no single CLS-to-patch map
    return grid


def _config_folder(path: Path) -> Path:
    path = Path(path)
    if path.is_file() and path.name.endswith(".json"):
        return path.parent
    if path.is_dir() and (path / "config.json").is_file():
        return path
    raise UserInputError(
        f"--hf expects a save_pretrained folder holding config.json, or a config.json file; got {path}"
    )


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def is_video_config(config: Any) -> bool:
    """True for a `*ForVideoClassification` config (by `architectures`, else by the auto mapping)."""
    from transformers import MODEL_FOR_VIDEO_CLASSIFICATION_MAPPING

    architectures = getattr(config, "architectures", None) or []
    if any(architecture.endswith("ForVideoClassification") for architecture in architectures):
        return True
    return not architectures and type(config) in MODEL_FOR_VIDEO_CLASSIFICATION_MAPPING


def _classifier_class(config: Any) -> type[nn.Module]:
    """The `*ForImageClassification` (or `*ForVideoClassification`) class: from `architectures`, else the auto
    mapping's first choice.

    (`AutoModelForImageClassification.from_config` fails on configs without `architectures` whose mapping
    holds two classes, e.g. DeiT with and without distillation head.)
    """
    import transformers
    from transformers import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING, MODEL_FOR_VIDEO_CLASSIFICATION_MAPPING

    video = is_video_config(config)
    suffix = "ForVideoClassification" if video else "ForImageClassification"
    for architecture in getattr(config, "architectures", None) or []:
        if architecture.endswith(suffix) and hasattr(transformers, architecture):
            return getattr(transformers, architecture)
    mapping = MODEL_FOR_VIDEO_CLASSIFICATION_MAPPING if video else MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING
    try:
        model_class = mapping[type(config)]
    except KeyError as exc:
        raise UserInputError(
            f"{config.model_type!r} is neither an image nor a video classifier known to transformers "
            "(expected a config of a *ForImageClassification or *ForVideoClassification model)"
        ) from exc
    return model_class[0] if isinstance(model_class, (list, tuple)) else model_class


def _frames(config: Any, preprocessor: dict[str, Any]) -> int:
    frames = getattr(config, "num_frames", None) or preprocessor.get("num_frames")
    if not isinstance(frames, int) or frames < 1:
        raise UserInputError("a video classifier's config.json needs num_frames (frames per clip); none found")
    return frames


def _spec_name(folder: Path) -> str:
    """`hf_<folder>`; a folder written by `attnserve train NAME --from-hf` keeps NAME (from its metrics.json)."""
    from attnserve.errors import DataError
    from attnserve.models.metrics import TrainingMetrics

    try:
        metrics = TrainingMetrics.load(folder)
    except DataError:  # an unreadable metrics.json only loses the name
        metrics = None
    if metrics is not None and re.fullmatch(r"[a-z][a-z0-9_]*", metrics.name):
        return metrics.name
    name = re.sub(r"[^a-z0-9_]+", "_", folder.name.lower()).strip("_")
    if not name:
        return "hf_model"
    name = name if name[0].isalpha() else f"m_{name}"
    return name if name.startswith("hf_") else f"hf_{name}"  # a folder already called hf_vit stays hf_vit


def make_random_weights_nondegenerate(model: nn.Module, example: torch.Tensor, *, calibration_batches: int = 2) -> None:
    """Reset norm layers to identity and calibrate BatchNorm statistics on `example` (random weights only).

    Args:
        model: the classifier (takes what `example` is).
        example: one input batch (e.g. uint8 pixels for the wrapper).
        calibration_batches: forward passes used to estimate the BatchNorm running statistics.
    """
    batch_norms = []
    for module in model.modules():
        if isinstance(module, (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)):
            if getattr(module, "weight", None) is not None:
                nn.init.ones_(module.weight)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            batch_norms.append(module)
    if not batch_norms:
        return
    model.eval()
    for module in batch_norms:
        module.reset_running_stats()
        module.momentum = None  # cumulative average over the calibration batches
        module.train()
    with torch.no_grad():
        for _ in range(calibration_batches):
            model(example)
    model.eval()


def _build(
    config: Any, folder: Path, weights: list[Path], attn_implementation: str | None
) -> tuple[nn.Module, list[str]]:
    """The `transformers` model: SDPA when the architecture has it, else the named fallback (`eager`)."""
    model_class = _classifier_class(config)

    def build(implementation: str) -> nn.Module:
        if weights:
            return model_class.from_pretrained(
                str(folder), local_files_only=True, use_safetensors=True, attn_implementation=implementation
            )
        return model_class._from_config(config, attn_implementation=implementation)

    implementations = [attn_implementation] if attn_implementation else ["sdpa", SDPA_UNSUPPORTED_HINT]
    errors: list[str] = []
    for implementation in implementations:
        try:
            with torch.random.fork_rng():
                torch.manual_seed(0)  # random weights: the same every time (reproducible exports and tests)
                return build(implementation), errors
        except (ValueError, ImportError) as exc:  # transformers raises ValueError for an unsupported attention
            errors.append(f"{implementation}: {exc}")
    raise UserInputError(f"cannot build {config.model_type!r} from {folder}: {'; '.join(errors)}")


def _spec(
    config: Any,
    folder: Path,
    path: Path,
    hf_model: nn.Module,
    weights: list[Path],
    *,
    name: str,
    serving: ServingSection,
) -> ModelSpec:
    """The ModelSpec from the config (+ preprocessor_config.json): size, frames, mean/std, labels, preprocessing."""
    preprocessor = _read_json(folder / "preprocessor_config.json")
    channels = int(getattr(config, "num_channels", 3))
    steps = input_steps(config, folder)
    mean, std, height, width = steps.mean, steps.std, steps.height, steps.width
    id2label = {int(k): str(v) for k, v in (config.id2label or {}).items()}
    video = is_video_config(config)
    shape = (_frames(config, preprocessor), channels, height, width) if video else (channels, height, width)
    arch_args = {"path": str(path.resolve()), "attn_implementation": hf_model.config._attn_implementation}
    return ModelSpec(
        name=name,
        arch=f"hf:{config.model_type}",
        arch_args=arch_args,
        kind="video" if video else "image",
        io=IoSection(
            layout="NTCHW" if video else "NCHW",
            input_shape=shape,
            mean=mean,
            std=std,
            labels=tuple(id2label[i] for i in sorted(id2label)),
            preprocessing=steps.preprocessing,
        ),
        trained=bool(weights),
        serving=serving,
    )


def _wrap(hf_model: nn.Module, spec: ModelSpec, *, random_weights: bool) -> nn.Module:
    """The uint8-pixels wrapper of the right kind (explainable where the attention allows), in eval mode."""
    if spec.kind == "video":
        found = _video_tokens(hf_model, spec.io.input_shape)
        model: nn.Module = (
            HFVideoExplainClassifier(hf_model, spec.io.mean, spec.io.std, *found)
            if found
            else HFVideoClassifier(hf_model, spec.io.mean, spec.io.std)
        )
    else:
        grid = _vit_grid(hf_model, spec.io.input_shape)
        model = (
            HFViTClassifier(hf_model, spec.io.mean, spec.io.std, grid)
            if grid
            else HFImageClassifier(hf_model, spec.io.mean, spec.io.std)
        )
    model.eval()
    if random_weights:
        generator = torch.Generator().manual_seed(0)
        example = torch.randint(0, 256, (8, *spec.io.input_shape), dtype=torch.uint8, generator=generator)
        make_random_weights_nondegenerate(model, example)
    return model


def load_hf_classifier(
    path: Path,
    *,
    name: str | None = None,
    attn_implementation: str | None = None,
    max_batch_size: int = 16,
) -> tuple[nn.Module, ModelSpec]:
    """Build a `transformers` image or video classifier from local files and its ModelSpec, without any download.

    Args:
        path: a `save_pretrained` folder, or a `config.json` file (random weights).
        name: deployable name (default `hf_<folder name>`).
        attn_implementation: `sdpa` (fused ONNX `Attention` at opset 23) or `eager`; default tries `sdpa`
            and falls back to `eager` for architectures without an SDPA path (MobileViT, LeViT, TimeSformer).
        max_batch_size: the spec's max batch (its preferred batch sizes: the defaults that fit).

    Returns:
        `(model, spec)`: the wrapped model in eval mode (uint8 pixels in, logits out) and its spec; ViT-like
        image models (ViT, DeiT, BEiT, DINOv2: class token + patch grid) come as `HFViTClassifier`, which also
        has `forward_with_attention` for the explain model; video classifiers as `HFVideoClassifier` (clips
        `(B, T, C, H, W)`).
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from transformers import AutoConfig

    path = Path(path)
    folder = _config_folder(path)
    config_file = path if path.is_file() else folder / "config.json"
    try:
        config = AutoConfig.from_pretrained(str(config_file), local_files_only=True)
    except (ValueError, OSError, KeyError) as exc:
        raise UserInputError(f"{config_file} is not a transformers config this version can read: {exc}") from exc
    weights = sorted(folder.glob("*.safetensors")) if path.is_dir() else []
    if path.is_dir() and not weights and any(folder.glob("*.bin")):
        raise UserInputError(f"{folder} holds only pickle (*.bin) weights; save them as safetensors first")
    hf_model, fallbacks = _build(config, folder, weights, attn_implementation)
    if fallbacks:  # no SDPA path: the graph gets MatMul/Softmax instead of fused Attention; say so
        logger.warning(
            "%s: falling back to attn_implementation=%s (%s)",
            type(hf_model).__name__,
            hf_model.config._attn_implementation,
            "; ".join(fallbacks),
        )
    serving = ServingSection(
        max_batch_size=max_batch_size, preferred_batch_sizes=preferred_batch_sizes_up_to(max_batch_size)
    )
    spec = _spec(config, folder, path, hf_model, weights, name=name or _spec_name(folder), serving=serving)
    return _wrap(hf_model.eval(), spec, random_weights=not weights), spec
