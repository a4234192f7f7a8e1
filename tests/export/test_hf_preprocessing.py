"""A Hugging Face processor's steps become the spec's `Preprocessing`: the model input equals the processor's
`pixel_values` (before normalisation) on non-square images of both orientations, for each family's processor; the
served pipeline answers as `transformers.pipeline("image-classification")`; inexpressible options are refused."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

transformers = pytest.importorskip("transformers", reason="the hf extra (transformers) is not installed")

from export_fixtures import TINY_TRANSFORMER

from attnserve.errors import UserInputError
from attnserve.export.hf_import import load_hf_classifier
from attnserve.preprocessing import Preprocessing, frame_to_chw, to_chw
from attnserve.spec import ModelSpec

# Each family's processor class (the one its checkpoints name), small sizes, with the family's own resize rules:
# squash (ViT, Swin, BEiT), squash + centre crop (DeiT), shortest edge + crop (DINOv2's Bit, CLIP, VideoMAE, ViViT),
# shortest edge / crop_pct + crop (ConvNeXt); bilinear and bicubic; ViViT's offset rescale.
PROCESSORS: dict[str, Callable[[], Any]] = {
    "vit": lambda: transformers.ViTImageProcessor(size={"height": 32, "width": 32}),
    "deit": lambda: transformers.DeiTImageProcessor(
        size={"height": 40, "width": 40}, crop_size={"height": 32, "width": 32}
    ),
    "beit": lambda: transformers.BeitImageProcessor(size={"height": 32, "width": 32}),
    "convnext": lambda: transformers.ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=0.875),
    "dinov2": lambda: transformers.BitImageProcessor(size={"shortest_edge": 36}, crop_size={"height": 32, "width": 32}),
    "clip": lambda: transformers.CLIPImageProcessor(size={"shortest_edge": 33}, crop_size={"height": 32, "width": 32}),
    "swin": lambda: transformers.ViTImageProcessor(size={"height": 32, "width": 32}, resample=3),
    "videomae": lambda: transformers.VideoMAEImageProcessor(
        size={"shortest_edge": 36}, crop_size={"height": 32, "width": 32}
    ),
    "vivit": lambda: transformers.VivitImageProcessor(
        size={"shortest_edge": 36}, crop_size={"height": 32, "width": 32}
    ),
}
VIDEO = {"videomae", "vivit"}
EXPECTED_RESIZE = {
    "vit": "squash",
    "deit": "squash",
    "beit": "squash",
    "convnext": "shortest_edge",
    "dinov2": "shortest_edge",
    "clip": "shortest_edge",
    "swin": "squash",
    "videomae": "shortest_edge",
    "vivit": "shortest_edge",
}


def _picture(height: int, width: int, seed: int) -> Image.Image:
    """A non-square RGB picture with gradients, edges and noise (resampling filters differ on all three)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([x * 255 // width, y * 255 // height, (x + y) * 255 // (width + height)], axis=-1)
    pixels[height // 4 : height // 2, width // 3 : 2 * width // 3] = rng.integers(0, 256, 3)
    pixels = pixels + rng.integers(-30, 30, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _steps(family: str, folder: Path) -> Any:
    from attnserve.hf_preprocessing import load_processor_settings, processor_steps

    PROCESSORS[family]().save_pretrained(folder)
    settings = load_processor_settings(folder)
    assert settings is not None
    return processor_steps(settings, channels=3)


def _denormalised(pixel_values: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """The processor's `pixel_values` (C, H, W) back on the 0..255 scale through the spec's own mean/std."""
    channel = (slice(None), None, None)
    return (pixel_values * np.asarray(std)[channel] + np.asarray(mean)[channel]) * 255.0


@pytest.mark.parametrize("family", sorted(PROCESSORS))
def test_model_input_equals_the_processors_pixel_values(family: str, tmp_path: Path) -> None:
    steps = _steps(family, tmp_path)
    assert steps.preprocessing.resize == EXPECTED_RESIZE[family] and (steps.height, steps.width) == (32, 32)
    processor = PROCESSORS[family]()
    for size in ((30, 52), (52, 30), (45, 37)):  # landscape, portrait, nearly square
        if family in VIDEO:
            frames = [_picture(*size, seed=index) for index in range(3)]
            expected = np.asarray(processor([frames], return_tensors="np")["pixel_values"])[0]  # (T, C, H, W)
            ours = np.stack([frame_to_chw(frame, 3, 32, 32, steps.preprocessing) for frame in frames])
            expected = np.stack([_denormalised(frame, steps.mean, steps.std) for frame in expected])
        else:
            picture = _picture(*size, seed=sum(size))
            expected = np.asarray(processor(images=picture, return_tensors="np")["pixel_values"])[0]
            ours = to_chw(picture, 3, 32, 32, steps.preprocessing)
            expected = _denormalised(expected, steps.mean, steps.std)
        assert ours.shape == expected.shape and ours.dtype == np.uint8
        within_one = np.abs(ours.astype(np.float64) - expected) <= 1.0
        assert within_one.mean() >= 0.99, (family, size, float(within_one.mean()))
        assert ours.std() > 20  # not a blank input that would match anything


def test_vivit_offset_rescale_folds_into_mean_and_std(tmp_path: Path) -> None:
    steps = _steps("vivit", tmp_path)
    # (pixels / 127.5 - 1 - 0.5) / 0.5 == (pixels / 255 - 0.75) / 0.25
    assert steps.mean == pytest.approx((0.75,) * 3) and steps.std == pytest.approx((0.25,) * 3)


def _write_processor(folder: Path, **settings: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    transformers.ViTConfig(**TINY_TRANSFORMER, image_size=32, patch_size=8, num_labels=3).save_pretrained(folder)
    base = {"image_processor_type": "ViTImageProcessor", "size": {"height": 32, "width": 32}}
    (folder / "preprocessor_config.json").write_text(json.dumps({**base, **settings}))
    return folder


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"do_pad": True}, "do_pad"),
        ({"size": {"longest_edge": 64}}, "longest_edge"),
        ({"size": {"shortest_edge": 32}}, "do_center_crop"),
        ({"image_processor_type": "LevitImageProcessor"}, "LevitImageProcessor"),
    ],
)
def test_an_option_the_spec_cannot_express_is_refused_naming_it(
    settings: dict[str, Any], named: str, tmp_path: Path
) -> None:
    folder = _write_processor(tmp_path / "model", **settings)
    with pytest.raises(UserInputError, match=named):
        load_hf_classifier(folder, max_batch_size=2)


def test_specs_and_parameters_of_todays_format_still_load() -> None:
    """spec.json files written before the centre-crop fields existed, and their Triton parameters."""
    old = {"resize": "letterbox", "channel_order": "rgb", "interpolation": "bilinear", "pad_value": 0}
    assert Preprocessing.from_mapping(old) == Preprocessing(resize="letterbox")
    parameters = {f"preprocessing_{key}": str(value) for key, value in old.items()}
    assert Preprocessing.from_parameters(parameters) == Preprocessing(resize="letterbox")
    spec = {
        "name": "old_model",
        "arch": "vit_tiny",
        "kind": "image",
        "layout": "NCHW",
        "input_shape": [3, 32, 32],
        "mean": [0.5] * 3,
        "std": [0.5] * 3,
        "labels": ["a", "b"],
        "preprocessing": {**old, "frame_sampling": "uniform"},
    }
    assert ModelSpec.model_validate(spec).io.preprocessing.center_crop is False
    new = Preprocessing(resize="shortest_edge", shortest_edge=36, center_crop=True, interpolation="bicubic")
    assert Preprocessing.from_parameters(new.to_parameters()) == new


# -- served: the pipeline answers as transformers.pipeline("image-classification") --------------------------------
LABELS = {"id2label": {0: "a", 1: "b", 2: "c"}, "label2id": {"a": 0, "b": 1, "c": 2}}
SERVED = {
    "dinov2": lambda: transformers.Dinov2ForImageClassification(
        transformers.Dinov2Config(**TINY_TRANSFORMER, image_size=32, patch_size=8, **LABELS)
    ),
    "deit": lambda: transformers.DeiTForImageClassification(
        transformers.DeiTConfig(**TINY_TRANSFORMER, image_size=32, patch_size=8, **LABELS)
    ),
}


def _saved_model(family: str, folder: Path) -> Path:
    """A random-weight classifier with spread logits (a scaled head), saved with its processor, as a user's folder."""
    import torch

    torch.manual_seed(3)
    model = SERVED[family]().eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.startswith("classifier") and name.endswith("weight"):
                parameter.mul_(200.0)  # random heads give ~equal scores; spread them so top-1 is not a tie
    model.save_pretrained(folder)
    PROCESSORS[family]().save_pretrained(folder)
    return folder


def _trainer_fine_tuned(folder: Path) -> Path:
    """A ViT fine-tuned for a few steps with `transformers.Trainer`, saved as a user would (save_model + processor)."""
    import torch

    torch.manual_seed(5)
    model = transformers.ViTForImageClassification(
        transformers.ViTConfig(**TINY_TRANSFORMER, image_size=32, patch_size=8, **LABELS)
    )
    with torch.no_grad():
        model.classifier.weight.mul_(200.0)  # spread the random head's scores (see _saved_model)
    processor = PROCESSORS["deit"]()  # resize to 40 x 40, centre crop 32 x 32, bicubic
    pictures = [_picture(40 + index, 60 - index, seed=index) for index in range(8)]
    pixel_values = processor(images=pictures, return_tensors="pt")["pixel_values"]
    examples = [{"pixel_values": pixel_values[i], "labels": i % 3} for i in range(len(pictures))]
    arguments = transformers.TrainingArguments(
        output_dir=str(folder / "trainer"), max_steps=3, per_device_train_batch_size=4, report_to=[], use_cpu=True
    )
    trainer = transformers.Trainer(model=model, args=arguments, train_dataset=examples)
    trainer.train()
    trainer.save_model(str(folder))
    processor.save_pretrained(folder)
    return folder


def _shape_folder(root: Path, per_class: int) -> Path:
    """`per_class` 48 x 48 PNGs of circles, squares and triangles, one folder per class."""
    from attnserve.models.folders import write_png
    from attnserve.models.synthetic import shapes_arrays

    pixels, labels = shapes_arrays(per_class * 8, seed=7, size=48)
    for index, name in enumerate(("circle", "square", "triangle")):
        (root / name).mkdir(parents=True)
        for count, sample in enumerate(pixels[labels == index][:per_class]):
            write_png(sample, root / name / f"{count:03d}.png")
    return root


def _attnserve_fine_tuned(root: Path) -> Path:
    """`attnserve train my_model --from-hf` on a tiny pretrained folder: the run folder `export --hf` takes."""
    from attnserve.models.hf_finetune import finetune_hf

    pretrained = _saved_model("deit", root / "pretrained")  # squash 40 x 40, centre crop 32 x 32
    data = _shape_folder(root / "data", per_class=6)
    metrics = finetune_hf("my_model", pretrained, data, max_minutes=0.05, runs_dir=root / "runs_ft", progress=False)
    folder = root / "runs_ft" / "my_model"
    config = json.loads((folder / "config.json").read_text())
    assert config["id2label"] == {"0": "circle", "1": "square", "2": "triangle"}  # the folder's classes, new head
    assert metrics.test_samples == 3 and metrics.train_samples == 15  # held-out files never trained on
    return folder


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, dict[str, Path]]]:
    """One server for: DINOv2 with its processor, a ViT fine-tuned with Trainer (DeiT's processor), and a DeiT
    fine-tuned by `attnserve train NAME --from-hf` (exported without --hf-name: it keeps NAME)."""
    from support.servers import local_server

    from attnserve.cli import main
    from attnserve.serving.pipelines import write_pipeline_entries
    from attnserve.serving.runtime_view import build_runtime_repository

    root = tmp_path_factory.mktemp("hf_parity")
    folders = {"dinov2": _saved_model("dinov2", root / "hf" / "dinov2")}  # shortest edge, crop, bicubic
    folders["trainer"] = _trainer_fine_tuned(root / "hf" / "trainer")
    folders["my_model"] = _attnserve_fine_tuned(root)
    for name, folder in folders.items():
        argv = ["export", "--hf", str(folder), "--no-optimize", "--repository", str(root / "repo")]
        argv += [] if name == "my_model" else ["--hf-name", f"hf_{name}"]
        assert main([*argv, "--runs-dir", str(root / "runs")]) == 0
        report = json.loads((root / "runs" / _served_name(name) / "export" / "export_report.json").read_text())
        write_pipeline_entries(ModelSpec.model_validate(report["spec"]), root / "repo")
    view, loaded, _ = build_runtime_repository(root / "repo", root / "runtime")
    with local_server(view, loaded, root / "server") as server:
        yield server, folders


def _served_name(name: str) -> str:
    return name if name == "my_model" else f"hf_{name}"


@pytest.mark.triton
@pytest.mark.parametrize("family", ["dinov2", "trainer", "my_model"])
def test_served_top1_and_scores_equal_transformers_pipeline(
    family: str, served: tuple[Any, dict[str, Path]], tmp_path: Path
) -> None:
    from attnserve.clients.client import TritonClient
    from attnserve.clients.settings import ClientSettings

    server, folders = served
    classifier = transformers.pipeline("image-classification", model=str(folders[family]), device="cpu")
    files = []
    for index, size in enumerate(((30, 52), (52, 30), (41, 64))):
        path = tmp_path / f"{index}.png"
        _picture(*size, seed=40 + index).save(path)
        files.append(path)
    with TritonClient(ClientSettings(url=server.grpc_url)) as client:
        payloads = [path.read_bytes() for path in files]
        answers = client.classify_encoded(f"{_served_name(family)}_pipeline", payloads, top_k=3)
    for path, answer in zip(files, answers, strict=True):
        expected = classifier(Image.open(path), top_k=3)
        assert answer.label == expected[0]["label"], (path.name, answer, expected)
        for ours, theirs in zip(answer.top_k, expected, strict=True):
            assert ours.label == theirs["label"] and abs(ours.score - theirs["score"]) < 0.01
