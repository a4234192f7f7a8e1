"""The ONE image/frame preprocessing: how a picture becomes a model's uint8 input, declared once per model.

Training data loading (`attnserve.models.folders`), the Python client (`attnserve.clients.media`) and the
server-side pipeline (`attnserve.serving.python_models.preprocess`) all call `to_chw`, with the
`Preprocessing` the model's `ModelSpec` declares, so a user's non-square image becomes the same bytes in
training and in serving. numpy + Pillow only (no torch, no pydantic): the Triton python backend imports it.

Resize modes (`Preprocessing.resize`):
- `squash` (default): resize straight to H x W. The whole image is kept (a square at the edge of a 256x64
  image stays in the input), at the cost of the aspect ratio. It is what training on class folders always
  did, so checkpoints in `runs/` stay valid, and what Hugging Face's ViT image processor does. On square
  images (every built-in dataset) it is the identity of a plain resize, so the demo models keep their accuracy.
- `letterbox`: scale to fit inside H x W (aspect kept), pad the rest with `pad_value`, centred.
- `crop`: scale to cover H x W (aspect kept), crop the centre. Cuts away the edges of non-square images.
- `shortest_edge`: scale the shorter side to `shortest_edge` (aspect kept, the longer side truncated as Hugging
  Face's `get_resize_output_image_size` does), then `center_crop` to H x W (DINOv2's `BitImageProcessor`, CLIP,
  VideoMAE; ConvNeXt with its `crop_pct` is `shortest_edge = int(H / crop_pct)`).
- `none`: no resize (a processor's `do_resize: false`); without `center_crop` the image must already be H x W.

`center_crop` (Hugging Face's step after the resize): `squash` first resizes to `resize_height x resize_width`
(default: H x W), then the centre H x W is taken, offsets rounded down, zero fill where the image is smaller
(DeiT: 256 x 256 then 224 x 224). Every resize is Pillow's `Image.resize` on the uint8 image, which is what the
Transformers Pillow processors do, so the model input equals their `pixel_values` before rescale/normalise; their
`rescale_factor`, `do_rescale` and `do_normalize` fold exactly into the model's mean/std (`export --hf`).

Channel order: `rgb` (default) or `bgr` for 3-channel models; 1-channel models get luminance (Pillow "L").
Frame sampling (video): `uniform`, `frames` indices spread evenly over the decoded frames, first and last
included (`sample_frame_indices`); each frame goes through `frame_to_chw`, the same transform as an image.
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np

from attnserve.errors import DataError, UserInputError

if TYPE_CHECKING:
    from PIL import Image as PILImage

ResizeMode = Literal["squash", "letterbox", "crop", "shortest_edge", "none"]
ChannelOrder = Literal["rgb", "bgr"]
Interpolation = Literal["bilinear", "bicubic", "nearest", "lanczos", "box", "hamming"]
FrameSampling = Literal["uniform"]

MAX_IMAGE_PIXELS = 40_000_000
"""Images with more pixels are refused before decoding (decompression bombs), by client and server alike."""
MAX_PAYLOAD_BYTES = 64 * 1024 * 1024
"""Encoded images/videos larger than this are refused, by client and server alike."""

PARAMETER_PREFIX = "preprocessing_"
"""Prefix of the Triton config parameters that carry a `Preprocessing` (`to_parameters`)."""


@dataclass(frozen=True)
class Preprocessing:
    """How an image (or each video frame) becomes a model input; a field of `ModelSpec` (see module doc).

    Attributes:
        resize: `squash` (whole image, aspect not kept), `letterbox` (whole image, padded), `crop`
            (aspect kept, centre cropped), `shortest_edge` (aspect kept, then `center_crop`) or `none`.
        channel_order: `rgb` or `bgr` (3-channel models only; grey models take luminance).
        interpolation: Pillow resampling filter.
        pad_value: Grey level of the letterbox padding (0..255).
        frame_sampling: Video frame choice: `uniform` (evenly spaced, first and last included).
        center_crop: After the resize, take the centre H x W (Hugging Face's `do_center_crop`).
        resize_height: `squash` + `center_crop`: the height resized to before the crop (None: H).
        resize_width: `squash` + `center_crop`: the width resized to before the crop (None: W).
        shortest_edge: `shortest_edge`: the length the shorter side is resized to.
    """

    resize: ResizeMode = "squash"
    channel_order: ChannelOrder = "rgb"
    interpolation: Interpolation = "bilinear"
    pad_value: int = 0
    frame_sampling: FrameSampling = "uniform"
    center_crop: bool = False
    resize_height: int | None = None
    resize_width: int | None = None
    shortest_edge: int | None = None

    def __post_init__(self) -> None:
        for name, kind in (
            ("resize", ResizeMode),
            ("channel_order", ChannelOrder),
            ("interpolation", Interpolation),
            ("frame_sampling", FrameSampling),
        ):
            if getattr(self, name) not in get_args(kind):
                raise UserInputError(
                    f"preprocessing {name} must be one of {get_args(kind)}, got {getattr(self, name)!r}"
                )
        if not isinstance(self.pad_value, int) or not 0 <= self.pad_value <= 255:
            raise UserInputError(f"preprocessing pad_value must be an integer in 0..255, got {self.pad_value!r}")
        self._check_crop_fields()

    def _check_crop_fields(self) -> None:
        """The centre-crop fields: positive sizes, each used only by the resize mode that reads it."""
        for name in ("resize_height", "resize_width", "shortest_edge"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise UserInputError(f"preprocessing {name} must be a positive integer or None, got {value!r}")
        if not isinstance(self.center_crop, bool):
            raise UserInputError(f"preprocessing center_crop must be true or false, got {self.center_crop!r}")
        if (self.resize == "shortest_edge") != (self.shortest_edge is not None):
            raise UserInputError(
                f"preprocessing shortest_edge is set exactly when resize is 'shortest_edge'; got resize="
                f"{self.resize!r}, shortest_edge={self.shortest_edge!r}"
            )
        if self.resize == "shortest_edge" and not self.center_crop:
            raise UserInputError("preprocessing resize 'shortest_edge' needs center_crop (its size follows the image)")
        sized = self.resize_height is not None or self.resize_width is not None
        if sized and (self.resize != "squash" or not self.center_crop):
            raise UserInputError(
                f"preprocessing resize_height/resize_width are the size before a centre crop: they need resize "
                f"'squash' and center_crop; got resize={self.resize!r}, center_crop={self.center_crop}"
            )
        if self.center_crop and self.resize in ("letterbox", "crop"):
            raise UserInputError(f"preprocessing resize {self.resize!r} already gives H x W: center_crop adds nothing")

    def to_parameters(self) -> dict[str, str]:
        """As Triton config parameters (strings, keys prefixed with `PARAMETER_PREFIX`)."""
        return {PARAMETER_PREFIX + key: str(value) for key, value in asdict(self).items()}

    @classmethod
    def from_parameters(cls, parameters: dict[str, str]) -> Preprocessing:
        """Back from `to_parameters`; missing keys take the defaults (entries written before the field existed)."""
        values: dict[str, Any] = {}
        for field in fields(cls):
            raw = parameters.get(PARAMETER_PREFIX + field.name)
            if raw is None:
                continue
            if field.name in _INTEGER_FIELDS:
                values[field.name] = None if raw == "None" else int(raw)
            elif field.name == "center_crop":
                values[field.name] = raw == "True"
            else:
                values[field.name] = raw
        return cls(**values)

    @classmethod
    def from_mapping(cls, raw: dict[str, Any] | None) -> Preprocessing:
        """From the JSON form in a spec (`spec.json`, the `attnserve_spec` config parameter); None = defaults."""
        if not raw:
            return cls()
        unknown = sorted(set(raw) - {field.name for field in fields(cls)})
        if unknown:
            raise UserInputError(f"unknown preprocessing fields {unknown}; known: {[f.name for f in fields(cls)]}")
        return cls(**raw)


DEFAULT_PREPROCESSING = Preprocessing()
_INTEGER_FIELDS = frozenset({"pad_value", "resize_height", "resize_width", "shortest_edge"})


def _resample(preprocessing: Preprocessing) -> Any:
    from PIL import Image

    return {
        "bilinear": Image.Resampling.BILINEAR,
        "bicubic": Image.Resampling.BICUBIC,
        "nearest": Image.Resampling.NEAREST,
        "lanczos": Image.Resampling.LANCZOS,
        "box": Image.Resampling.BOX,
        "hamming": Image.Resampling.HAMMING,
    }[preprocessing.interpolation]


def shortest_edge_size(image_height: int, image_width: int, shortest_edge: int) -> tuple[int, int]:
    """(height, width) with the shorter side at `shortest_edge`, the longer one truncated (Hugging Face's rule)."""
    short, long = (image_width, image_height) if image_width <= image_height else (image_height, image_width)
    new_long = int(shortest_edge * long / short)
    return (new_long, shortest_edge) if image_width <= image_height else (shortest_edge, new_long)


def _resize_then_center_crop(
    image: PILImage.Image, height: int, width: int, preprocessing: Preprocessing
) -> PILImage.Image:
    """Hugging Face's resize + `center_crop`: offsets rounded down, zero fill where the image is smaller."""
    if preprocessing.resize == "shortest_edge":
        assert preprocessing.shortest_edge is not None  # checked by Preprocessing
        size = shortest_edge_size(image.height, image.width, preprocessing.shortest_edge)[::-1]
        image = image.resize(size, _resample(preprocessing))
    elif preprocessing.resize == "squash":
        size = (preprocessing.resize_width or width, preprocessing.resize_height or height)
        image = image.resize(size, _resample(preprocessing))
    top, left = (image.height - height) // 2, (image.width - width) // 2
    return image.crop((left, top, left + width, top + height))  # Pillow fills outside the image with 0


def _resize(image: PILImage.Image, height: int, width: int, preprocessing: Preprocessing) -> PILImage.Image:
    from PIL import Image

    resample = _resample(preprocessing)
    if preprocessing.center_crop:
        return _resize_then_center_crop(image, height, width, preprocessing)
    if preprocessing.resize == "none":
        if image.size != (width, height):
            raise DataError(
                f"this model takes {width}x{height} images as they are (no resize), got {image.width}x{image.height}"
            )
        return image
    if preprocessing.resize == "squash":
        return image if image.size == (width, height) else image.resize((width, height), resample)
    if preprocessing.resize == "crop":
        scale = max(height / image.height, width / image.width)
        size = (max(width, round(image.width * scale)), max(height, round(image.height * scale)))
        image = image if image.size == size else image.resize(size, resample)
        left, top = (image.width - width) // 2, (image.height - height) // 2
        return image.crop((left, top, left + width, top + height))
    # letterbox: fit inside, pad centred
    scale = min(height / image.height, width / image.width)
    size = (min(width, max(1, round(image.width * scale))), min(height, max(1, round(image.height * scale))))
    image = image if image.size == size else image.resize(size, resample)
    fill = preprocessing.pad_value if image.mode == "L" else (preprocessing.pad_value,) * 3
    canvas = Image.new(image.mode, (width, height), fill)
    canvas.paste(image, ((width - size[0]) // 2, (height - size[1]) // 2))
    return canvas


def to_chw(
    image: PILImage.Image, channels: int, height: int, width: int, preprocessing: Preprocessing = DEFAULT_PREPROCESSING
) -> np.ndarray:
    """THE transform: a decoded image -> uint8 (channels, height, width) as the model takes it.

    Args:
        image: A decoded PIL image of any mode and size.
        channels: 1 (grey, luminance) or 3 (colour, in `preprocessing.channel_order`).
        height: Model input height.
        width: Model input width.
        preprocessing: The model's declared preprocessing (`ModelSpec.preprocessing`).

    Raises:
        UserInputError: For a channel count other than 1 or 3.
        DataError: With resize `none` and no centre crop, for an image that is not H x W.
    """
    if channels not in (1, 3):
        raise UserInputError(f"expected 1 (grey) or 3 (colour) channels, got {channels}")
    image = image.convert("L" if channels == 1 else "RGB")
    pixels = np.asarray(_resize(image, height, width, preprocessing), dtype=np.uint8)  # (H, W) or (H, W, 3)
    if pixels.ndim == 2:
        return np.ascontiguousarray(pixels[None])  # (1, H, W)
    if preprocessing.channel_order == "bgr":
        pixels = pixels[:, :, ::-1]
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))  # (C, H, W)


def frame_to_chw(
    frame: Any, channels: int, height: int, width: int, preprocessing: Preprocessing = DEFAULT_PREPROCESSING
) -> np.ndarray:
    """One video frame -> uint8 (C, H, W): a PIL image, a PyAV `VideoFrame` or an RGB (H, W, 3) uint8 array."""
    from PIL import Image

    if hasattr(frame, "to_image"):  # av.VideoFrame
        frame = frame.to_image()
    elif isinstance(frame, np.ndarray):
        frame = Image.fromarray(np.ascontiguousarray(frame))
    return to_chw(frame, channels, height, width, preprocessing)


def sample_frame_indices(
    available: int, wanted: int, preprocessing: Preprocessing = DEFAULT_PREPROCESSING
) -> np.ndarray:
    """`wanted` frame indices over `available` decoded frames (`uniform`: evenly spaced, first and last in).

    Raises:
        DataError: When there is no frame at all.
    """
    if available < 1:
        raise DataError("the video holds no decodable frames")
    return np.linspace(0, available - 1, wanted).round().astype(np.int64)


def check_image_size(width: int, height: int, where: str = "image") -> None:
    """Refuse images over `MAX_IMAGE_PIXELS` (client and server apply the same limit)."""
    if width * height > MAX_IMAGE_PIXELS:
        raise DataError(
            f"{where} of {width}x{height} = {width * height} pixels exceeds the limit of {MAX_IMAGE_PIXELS} pixels"
        )


def check_payload_size(size: int, what: str = "image") -> None:
    """Refuse encoded payloads over `MAX_PAYLOAD_BYTES` (client and server apply the same limit)."""
    if size > MAX_PAYLOAD_BYTES:
        raise DataError(f"{what} payload of {size} bytes exceeds the limit of {MAX_PAYLOAD_BYTES} bytes")


def open_image_bytes(payload: bytes, formats: tuple[str, ...] | None = None, where: str = "") -> PILImage.Image:
    """Decode encoded image bytes with the shared limits (size before decoding, then a full load).

    Args:
        payload: Encoded bytes.
        formats: Accepted Pillow format names (e.g. `("JPEG", "PNG")`); None accepts any Pillow reads.
        where: Names the source in messages (a file name); default: the byte count.

    Raises:
        DataError: Empty, too large (bytes or pixels), an unaccepted format, or undecodable/truncated data.
    """
    from PIL import Image, UnidentifiedImageError

    where = where or f"{len(payload)} bytes"
    if len(payload) == 0:
        raise DataError("empty image payload: expected encoded image bytes (JPEG or PNG)")
    check_payload_size(len(payload))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(bytes(payload)))
            if formats is not None and image.format not in formats:
                raise DataError(f"unsupported image format {image.format!r} ({where}): expected one of {list(formats)}")
            check_image_size(image.width, image.height, f"image {where}")
            image.load()  # decode now: truncated data fails here, not later
    except DataError:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:  # Pillow's own check, at open
        raise DataError(f"image {where} exceeds the limit of {MAX_IMAGE_PIXELS} pixels: {exc}") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        expected = " or ".join(formats) if formats else "an image format Pillow reads (PNG, JPEG, ...)"
        raise DataError(f"cannot decode image ({where}; expected {expected}): {clean_reason(exc)}") from exc
    return image


def clean_reason(exc: BaseException) -> str:
    """An exception's message without Python object reprs (Pillow and PyAV name `<_io.BytesIO object at 0x...>`)."""
    from PIL import UnidentifiedImageError

    if isinstance(exc, UnidentifiedImageError):
        return "not a recognised image format"
    text = re.sub(r"'?<[\w.]+ object at 0x[0-9a-fA-F]+>'?", "the data", str(exc))
    return text or type(exc).__name__
