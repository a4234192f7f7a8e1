"""A Hugging Face image processor's steps as a `Preprocessing` plus the model's mean/std, or a refusal naming the step.

`export --hf` reads `preprocessor_config.json` through `transformers.AutoImageProcessor` (so a key the file leaves
out takes the processor class's default, as it does in Transformers) and maps it:

- `size: {height, width}` -> `squash` to that size; `size: {shortest_edge}` -> `shortest_edge` (aspect kept);
  ConvNeXt's `crop_pct` below 384 -> `shortest_edge = int(size / crop_pct)` then a centre crop of `size`, at 384 and
  above a squash (what `ConvNextImageProcessor.resize` does); `do_resize: false` -> `none`.
- `do_center_crop` + `crop_size` -> `center_crop` to the model's input size; `resample` -> `interpolation`.
- `do_flip_channel_order` (MobileViT) -> `bgr`.
- `do_rescale`, `rescale_factor`, ViViT's `offset`, `do_normalize`, `image_mean`, `image_std` fold exactly into the
  model's mean/std (the wrapper computes `(pixels / 255 - mean) / std`).

Anything else that changes pixels is refused, naming it: an unknown processor class (its steps are not known here), a
`do_*` switch this module does not map (`do_pad`, ...), a `size` with other keys (`longest_edge`, ...), a shortest-
edge resize without centre crop (each image would get its own size). Nothing is approximated silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attnserve.errors import UserInputError
from attnserve.preprocessing import Preprocessing

KNOWN_PROCESSORS = frozenset(
    {"ViT", "DeiT", "Beit", "Bit", "CLIP", "ConvNext", "VideoMAE", "Vivit", "MobileViT", "Siglip", "Dinov2"}
)
"""Processor classes (`<Name>ImageProcessor`, `Pil` / `Fast` variants alike) whose steps this module maps; their
parity with Transformers is tested in tests/export/test_hf_preprocessing.py."""
MAPPED_SWITCHES = frozenset({"do_resize", "do_center_crop", "do_rescale", "do_normalize", "do_flip_channel_order"})
HARMLESS_SWITCHES = frozenset({"do_convert_rgb", "do_reduce_labels"})
"""`do_convert_rgb`: attnserve always converts to RGB (or luminance); `do_reduce_labels`: segmentation maps only."""
RESAMPLE_NAMES = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
"""Pillow's `Image.Resampling` values, as a processor's `resample` stores them."""


@dataclass(frozen=True)
class ProcessorSteps:
    """What the model's input takes from a processor: the transform, the input size and the normalisation."""

    preprocessing: Preprocessing
    height: int
    width: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    processor: str


def load_processor_settings(folder: Path) -> dict[str, Any] | None:
    """The processor's settings with its class defaults filled in, or None when the folder has no processor config.

    Raises:
        UserInputError: When Transformers cannot read the processor config.
    """
    if not (Path(folder) / "preprocessor_config.json").is_file():
        return None
    from transformers import AutoImageProcessor

    try:
        processor = AutoImageProcessor.from_pretrained(str(folder), local_files_only=True)
    except (ValueError, OSError, KeyError, ImportError) as exc:
        raise UserInputError(f"{folder}/preprocessor_config.json cannot be read by transformers: {exc}") from exc
    settings = processor.to_dict()
    settings["image_processor_type"] = type(processor).__name__
    return settings


def processor_family(settings: dict[str, Any]) -> str:
    """`ViTImageProcessorPil` -> `ViT`; refuses a class whose steps are not mapped here."""
    name = str(settings.get("image_processor_type") or "")
    family = name.removesuffix("Pil").removesuffix("Fast").removesuffix("ImageProcessor")
    if family not in KNOWN_PROCESSORS:
        raise UserInputError(
            f"image processor {name or '(unnamed)'!r}: its steps are not known to attnserve, so the served model "
            f"could see other pixels than Transformers gives it; known: {', '.join(sorted(KNOWN_PROCESSORS))}"
        )
    return family


def _refuse_unmapped_switches(settings: dict[str, Any]) -> None:
    for key, value in sorted(settings.items()):
        if key.startswith("do_") and value and key not in MAPPED_SWITCHES | HARMLESS_SWITCHES:
            raise UserInputError(
                f"preprocessor_config.json sets {key}={value!r}, which attnserve's preprocessing cannot express; "
                "remove it (or set it false) if the model does not need it"
            )


def _size(value: Any, key: str) -> dict[str, int]:
    """A processor size as {height, width} or {shortest_edge}; other keys are refused, naming them."""
    if isinstance(value, int):
        return {"height": value, "width": value}
    present = {k: int(v) for k, v in dict(value or {}).items() if v is not None}
    if set(present) in ({"height", "width"}, {"shortest_edge"}):
        return present
    raise UserInputError(
        f"preprocessor_config.json {key}={present}: attnserve maps {{height, width}} or {{shortest_edge}} only"
    )


def _resize_steps(settings: dict[str, Any], family: str) -> tuple[dict[str, Any], tuple[int, int]]:
    """Preprocessing fields of the resize + centre crop, and the model's input (height, width)."""
    size = _size(settings.get("size"), "size")
    crop = settings.get("do_center_crop") and _size(settings.get("crop_size"), "crop_size")
    if (
        family == "ConvNext" and "shortest_edge" in size and settings.get("do_resize", True)
    ):  # ConvNextImageProcessor.resize: crop_pct below 384
        if crop:
            raise UserInputError("ConvNeXt's processor with do_center_crop crops twice; attnserve crops once")
        edge = size["shortest_edge"]
        if edge < 384:
            size = {"shortest_edge": int(edge / float(settings.get("crop_pct") or 224 / 256))}
            crop = {"height": edge, "width": edge}
        else:
            size = {"height": edge, "width": edge}
    if crop and "shortest_edge" in crop:
        raise UserInputError(f"preprocessor_config.json crop_size={crop}: a centre crop needs height and width")
    if not settings.get("do_resize", True):
        if not crop:
            raise UserInputError("do_resize false without do_center_crop: the input size is the image's own")
        return {"resize": "none", "center_crop": True}, (crop["height"], crop["width"])
    if "shortest_edge" in size:
        if not crop:
            raise UserInputError(
                f"preprocessor_config.json size={size} without do_center_crop gives each image its own size; "
                "the exported model takes one size"
            )
        return {"resize": "shortest_edge", "shortest_edge": size["shortest_edge"], "center_crop": True}, (
            crop["height"],
            crop["width"],
        )
    if crop:
        fields = {"resize": "squash", "center_crop": True}
        return {**fields, "resize_height": size["height"], "resize_width": size["width"]}, (
            crop["height"],
            crop["width"],
        )
    return {"resize": "squash"}, (size["height"], size["width"])


def _per_channel(value: Any, channels: int, default: float) -> tuple[float, ...]:
    if value is None:
        return (default,) * channels
    values = (float(value),) if isinstance(value, (int, float)) else tuple(float(v) for v in value)
    return values * channels if len(values) == 1 else values


def _normalisation(settings: dict[str, Any], channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean/std on the 0..1 scale such that `(pixels / 255 - mean) / std` is the processor's `pixel_values`.

    The processor computes `((pixels * factor + offset) - m) / s` (factor 1, offset 0, m 0, s 1 for switched-off
    steps; ViViT's `offset` subtracts 1), which is `(pixels / 255 - (m - offset) / (255 factor)) / (s / (255 factor))`.
    """
    factor = float(settings.get("rescale_factor") or 1 / 255) if settings.get("do_rescale", True) else 1.0
    offset = -1.0 if settings.get("do_rescale", True) and settings.get("offset") else 0.0
    normalise = settings.get("do_normalize", True)
    m = _per_channel(settings.get("image_mean"), channels, 0.5) if normalise else (0.0,) * channels
    s = _per_channel(settings.get("image_std"), channels, 0.5) if normalise else (1.0,) * channels
    scale = 255.0 * factor
    if len(m) != channels or len(s) != channels:
        raise UserInputError(f"image_mean/image_std need {channels} values, got {list(m)} and {list(s)}")
    return tuple((mi - offset) / scale for mi in m), tuple(si / scale for si in s)


def processor_steps(settings: dict[str, Any], channels: int) -> ProcessorSteps:
    """Map a processor's resolved settings (`load_processor_settings`) to the spec's steps, or refuse (module doc).

    Raises:
        UserInputError: Naming the step that attnserve's preprocessing cannot express.
    """
    family = processor_family(settings)
    _refuse_unmapped_switches(settings)
    fields, (height, width) = _resize_steps(settings, family)
    resample = settings.get("resample")
    resample = 2 if resample is None else int(resample)
    if resample not in RESAMPLE_NAMES:
        raise UserInputError(f"preprocessor_config.json resample={resample}: expected one of {RESAMPLE_NAMES}")
    fields["interpolation"] = RESAMPLE_NAMES[resample]
    if settings.get("do_flip_channel_order"):
        fields["channel_order"] = "bgr"
    mean, std = _normalisation(settings, channels)
    return ProcessorSteps(Preprocessing(**fields), height, width, mean, std, str(settings["image_processor_type"]))


def _config_image_size(config: Any) -> tuple[int, int]:
    image_size = getattr(config, "image_size", None)
    if isinstance(image_size, (list, tuple)):
        return int(image_size[0]), int(image_size[1])
    if isinstance(image_size, int):
        return image_size, image_size
    raise UserInputError(
        "cannot tell the input size: no image_size in config.json and no preprocessor_config.json beside it"
    )


def input_steps(config: Any, folder: Path) -> ProcessorSteps:
    """A model folder's input steps: its processor's (`processor_steps`), or without `preprocessor_config.json` a
    squash to the config's `image_size` with mean and std 0.5.

    Raises:
        UserInputError: For a processor step attnserve cannot express, or no size to be found.
    """
    channels = int(getattr(config, "num_channels", 3))
    settings = load_processor_settings(folder)
    if settings is not None:
        return processor_steps(settings, channels)
    height, width = _config_image_size(config)
    return ProcessorSteps(Preprocessing(), height, width, (0.5,) * channels, (0.5,) * channels, "none")
