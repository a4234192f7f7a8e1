"""Pre-train a small Hugging Face ViT on a broad procedural corpus, offline, and save it with `save_pretrained`.

    python -m bench.pretrain                          # 15,000 steps, into reports/pretrained/vit_procedural
    python -m bench.pretrain --steps 3000 --out DIR   # a quick, weaker checkpoint

No model hub is reachable here, so the transfer path (`attnserve train NAME --from-hf DIR`) is shown with a
checkpoint made here: a `ViTForImageClassification` (patch 8 on 32 x 32, width 96, 4 layers, 3 heads) trained to
tell apart `len(KINDS)` kinds of picture: outlines and filled shapes (polygons of 3 to 6 sides, rhombi, circles,
half discs, ellipses, stars, crosses, rings, arcs, lines) and textures and patterns (stripes at any angle,
checkerboards, dots, grids, waves, blobs, noise), each drawn at random sizes, places, rotations, line widths and
colours over a gradient background with noise. The folder holds config.json, model.safetensors and a
`ViTImageProcessor` preprocessor_config.json (squash to 32 x 32, bilinear, mean/std 0.5): what `train --from-hf`
and `export --hf` read.

The corpus is generic on purpose: it includes triangles, squares and circles among its 24 kinds, as a broad
photographic corpus holds the objects of most small downstream tasks, but no image of the fine-tuning folder or its
evaluation set. Every kind is its own distribution (a rhombus is squeezed, not a rotated square). Training: a pool of
`--pool` pictures drawn once (drawing is a third of a step's cost), random batches of 64 with horizontal flips,
AdamW lr 2e-3, 5% warm-up then cosine over `--steps`. The budget is steps, not minutes, so the checkpoint does not
depend on what else the machine runs (on one core of this 2-core machine: about 25 steps/s quiet, 14 under load).
A JSON report (kind accuracy on held-out corpus images, steps, seconds, load average) goes beside the weights.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from attnserve.defaults import REPORTS_DIR

KINDS = (
    "triangle", "square", "pentagon", "hexagon", "semicircle", "circle", "ellipse", "star", "cross", "ring", "arc",
    "line", "outline_triangle", "outline_square", "outline_circle", "stripes", "checker", "dots", "grid", "waves",
    "blobs", "noise", "two_shapes", "rhombus",
)  # fmt: skip
SIZE = 32
BATCH = 64
LR = 2e-3
PATCH_SIZE, WIDTH, DEPTH = 8, 96, 4
DRAW_SIZE = 64
"""Pictures are drawn at 64 x 64 and shrunk to 32 x 32 (smooth edges, like a photo's)."""


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(0, 256, 3))  # type: ignore[return-value]


def _polygon(rng: np.random.Generator, sides: int, radius: float, centre: np.ndarray, star: bool = False) -> list:
    angle0 = rng.uniform(0, 2 * math.pi)
    points = []
    for index in range(sides * (2 if star else 1)):
        r = radius * (0.45 if star and index % 2 else 1.0)
        a = angle0 + 2 * math.pi * index / (sides * (2 if star else 1))
        points.append((centre[0] + r * math.cos(a), centre[1] + r * math.sin(a)))
    return points


def _shape(draw: object, rng: np.random.Generator, kind: str, fill: tuple[int, int, int]) -> None:
    """One shape of `kind` at a random size, place and rotation (filled, or outlined for outline_* / ring / arc)."""
    radius = rng.uniform(0.18, 0.4) * DRAW_SIZE
    centre = rng.uniform(radius, DRAW_SIZE - radius, 2)
    width = int(rng.integers(2, 7))
    box = [centre[0] - radius, centre[1] - radius, centre[0] + radius, centre[1] + radius]
    sides = {"triangle": 3, "square": 4, "pentagon": 5, "hexagon": 6}
    if kind in sides:
        draw.polygon(_polygon(rng, sides[kind], radius, centre), fill=fill)  # type: ignore[attr-defined]
    elif kind == "rhombus":  # a square squeezed along one diagonal: not a rotated square
        points = np.array(_polygon(rng, 4, radius, centre)) - centre
        points[1::2] *= rng.uniform(0.4, 0.6)
        draw.polygon([tuple(point) for point in points + centre], fill=fill)  # type: ignore[attr-defined]
    elif kind == "semicircle":
        start = rng.uniform(0, 360)
        draw.pieslice(box, start, start + 180, fill=fill)  # type: ignore[attr-defined]
    elif kind == "circle":
        draw.ellipse(box, fill=fill)  # type: ignore[attr-defined]
    elif kind == "ellipse":
        squeeze = rng.uniform(0.35, 0.65) * radius
        draw.ellipse([box[0], centre[1] - squeeze, box[2], centre[1] + squeeze], fill=fill)  # type: ignore[attr-defined]
    elif kind == "star":
        draw.polygon(_polygon(rng, int(rng.integers(5, 7)), radius, centre, star=True), fill=fill)  # type: ignore[attr-defined]
    elif kind == "cross":
        arm = radius * 0.35
        draw.rectangle([box[0], centre[1] - arm, box[2], centre[1] + arm], fill=fill)  # type: ignore[attr-defined]
        draw.rectangle([centre[0] - arm, box[1], centre[0] + arm, box[3]], fill=fill)  # type: ignore[attr-defined]
    elif kind in ("ring", "outline_circle"):
        draw.ellipse(box, outline=fill, width=width + (4 if kind == "ring" else 0))  # type: ignore[attr-defined]
    elif kind == "arc":
        start = rng.uniform(0, 360)
        draw.arc(box, start, start + rng.uniform(90, 240), fill=fill, width=width)  # type: ignore[attr-defined]
    elif kind == "line":
        points = _polygon(rng, 2, radius, centre)
        draw.line(points, fill=fill, width=width)  # type: ignore[attr-defined]
    elif kind in ("outline_triangle", "outline_square"):
        points = _polygon(rng, 3 if kind == "outline_triangle" else 4, radius, centre)
        draw.polygon(points, outline=fill, width=width)  # type: ignore[attr-defined]


def _pattern(rng: np.random.Generator, kind: str, fill: np.ndarray, back: np.ndarray) -> np.ndarray:
    """A texture over the whole picture: (DRAW_SIZE, DRAW_SIZE, 3) float."""
    y, x = np.mgrid[0:DRAW_SIZE, 0:DRAW_SIZE].astype(np.float64)
    angle, period = rng.uniform(0, math.pi), rng.uniform(5, 16)
    u = x * math.cos(angle) + y * math.sin(angle)
    v = -x * math.sin(angle) + y * math.cos(angle)
    if kind == "stripes":
        mask = (u % period) < period / 2
    elif kind == "checker":
        mask = ((u // period) + (v // period)) % 2 == 0
    elif kind == "dots":
        mask = ((u % period) - period / 2) ** 2 + ((v % period) - period / 2) ** 2 < (period / 4) ** 2
    elif kind == "grid":
        mask = ((u % period) < 2) | ((v % period) < 2)
    elif kind == "waves":
        mask = np.sin(u / period * 2 * math.pi + 3 * np.sin(v / (2 * period))) > 0
    elif kind == "blobs":
        field = sum(
            np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * s**2))
            for cx, cy, s in rng.uniform(0, 64, (6, 3)) + [0, 0, 4]
        )
        mask = field > 0.5
    else:  # noise: coarse random cells
        cells = rng.random((8, 8)) > 0.5
        mask = np.kron(cells, np.ones((8, 8), dtype=bool))
    return np.where(mask[..., None], fill, back)


def render(rng: np.random.Generator, kind_index: int) -> np.ndarray:
    """One corpus picture of KINDS[kind_index]: uint8 (3, SIZE, SIZE)."""
    from PIL import Image, ImageDraw

    kind = KINDS[kind_index]
    back, fill = np.array(_colour(rng), float), np.array(_colour(rng), float)
    while np.abs(back - fill).sum() < 120:  # keep the picture visible
        fill = np.array(_colour(rng), float)
    if kind in ("stripes", "checker", "dots", "grid", "waves", "blobs", "noise"):
        pixels = _pattern(rng, kind, fill, back)
    else:
        shade = rng.uniform(-40, 40, 3) * np.linspace(-1, 1, DRAW_SIZE)[:, None, None]  # a gradient background
        background = np.broadcast_to(back + shade, (DRAW_SIZE, DRAW_SIZE, 3))
        image = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for shape_kind in [kind] if kind != "two_shapes" else list(rng.choice(KINDS[:11], 2)):
            _shape(draw, rng, shape_kind, tuple(int(v) for v in fill))  # type: ignore[arg-type]
        pixels = np.asarray(image, dtype=np.float64)
    pixels = pixels + rng.normal(0, rng.uniform(0, 12), pixels.shape)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).resize((SIZE, SIZE), Image.Resampling.BILINEAR)
    return np.asarray(image).transpose(2, 0, 1).copy()


def corpus(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` pictures (uint8 (count, 3, SIZE, SIZE)) with balanced kind labels (count,)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % len(KINDS)
    rng.shuffle(labels)
    return np.stack([render(rng, int(label)) for label in labels]), labels.astype(np.int64)


def _model(patch_size: int, width: int) -> object:
    import transformers

    config = transformers.ViTConfig(
        image_size=SIZE, patch_size=patch_size, hidden_size=width, num_hidden_layers=DEPTH,
        num_attention_heads=width // 32, intermediate_size=2 * width, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, num_labels=len(KINDS), id2label=dict(enumerate(KINDS)),
        label2id={kind: index for index, kind in enumerate(KINDS)},
    )  # fmt: skip
    return transformers.ViTForImageClassification(config)


def _batches(pool: tuple[np.ndarray, np.ndarray], seed: int) -> Iterator[tuple[object, object]]:
    """Endless random batches of the pool, each picture mirrored left-right with probability 1/2."""
    import torch

    pixels, labels = (torch.from_numpy(array) for array in pool)
    generator = torch.Generator().manual_seed(seed)
    while True:
        index = torch.randint(0, len(labels), (BATCH,), generator=generator)
        flip = torch.rand(BATCH, generator=generator) < 0.5
        batch = pixels[index]
        yield torch.where(flip[:, None, None, None], batch.flip(-1), batch), labels[index]


def pretrain(out: Path, steps: int, seed: int, pool_size: int, patch_size: int = PATCH_SIZE, width: int = WIDTH) -> dict[str, object]:  # fmt: skip
    """Train for `steps` batches of a pool of corpus pictures; save the model and processor into `out`."""
    import torch
    import transformers
    from torch.nn import functional as F
    from tqdm.auto import tqdm

    from attnserve.models.hf_classifier import HFImageClassifier

    torch.manual_seed(seed)
    model = HFImageClassifier(_model(patch_size, width), (0.5,) * 3, (0.5,) * 3)  # type: ignore[arg-type]
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.05)
    drawn = time.perf_counter()
    pool, (test_x, test_y) = corpus(pool_size, seed), corpus(1200, seed + 10_000)
    started = time.perf_counter()
    model.train()
    batches = _batches(pool, seed)
    for step in tqdm(range(steps), desc="pretrain", unit="step", disable=not sys.stderr.isatty()):
        progress = step / steps
        for group in optimizer.param_groups:
            group["lr"] = LR * min(1.0, progress / 0.05) * 0.5 * (1 + math.cos(math.pi * progress))
        batch, labels = next(batches)
        loss = F.cross_entropy(model(batch), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    train_seconds = time.perf_counter() - started
    model.eval()
    with torch.inference_mode():
        accuracy = float((model(torch.from_numpy(test_x)).argmax(1).numpy() == test_y).mean())
    model.hf_model.save_pretrained(out)
    transformers.ViTImageProcessor(size={"height": SIZE, "width": SIZE}).save_pretrained(out)
    return {"kinds": len(KINDS), "patch_size": patch_size, "width": width, "held_out_kind_accuracy": round(accuracy, 4),
            "steps": steps, "pool": pool_size, "draw_seconds": round(started - drawn, 1),
            "train_seconds": round(train_seconds, 1), "seed": seed}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=15_000, help="training batches of 64 (default: 15000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--patch-size",
        type=int,
        default=PATCH_SIZE,
        help=f"ViT patch side on the 32 x 32 input (default: {PATCH_SIZE})",
    )
    parser.add_argument(
        "--width", type=int, default=WIDTH, help=f"ViT hidden size, a multiple of 32 (default: {WIDTH})"
    )
    parser.add_argument(
        "--pool", type=int, default=40_000, help="corpus pictures drawn once and sampled (default: 40000)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: fastest on shared cores)")
    parser.add_argument("--out", type=Path, default=REPORTS_DIR / "pretrained" / "vit_procedural")
    args = parser.parse_args(argv)  # fmt: skip
    import torch

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    report = pretrain(args.out, args.steps, args.seed, args.pool, args.patch_size, args.width)
    report |= {"threads": args.threads, "load_average_1min": [load_before, os.getloadavg()[0]], "out": str(args.out)}
    (args.out / "pretrain_report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
