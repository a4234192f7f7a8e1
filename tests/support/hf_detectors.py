"""Tiny Hugging Face detectors with random weights, saved locally as `save_pretrained` folders (no download).

DETR with a transformers-native ResNet backbone (timm does not import here) and YOLOS, both with a fixed-size
Pillow image processor of the input size the served graph takes (96 x 64), two labels and 10 object queries.
"""

from __future__ import annotations

from pathlib import Path

import torch

HF_DETECTOR_NAMES = ("hf_detr", "hf_yolos")
INPUT_SIZE = {"height": 64, "width": 96}
LABELS = {0: "cat", 1: "dog"}


def save_tiny_detectors(root: Path) -> dict[str, Path]:
    """Write `root/hf_detr` and `root/hf_yolos` (config, safetensors, preprocessor config); returns name -> folder."""
    from transformers import DetrConfig, DetrForObjectDetection, ResNetConfig, YolosConfig, YolosForObjectDetection
    from transformers.models.detr.image_processing_pil_detr import DetrImageProcessorPil
    from transformers.models.yolos.image_processing_pil_yolos import YolosImageProcessorPil

    labels = dict(num_labels=len(LABELS), id2label=LABELS, label2id={v: k for k, v in LABELS.items()})
    backbone = ResNetConfig(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], out_features=["stage2"])
    detr = DetrConfig(use_timm_backbone=False, use_pretrained_backbone=False, backbone_config=backbone, d_model=32,
                      encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
                      encoder_ffn_dim=64, decoder_ffn_dim=64, num_queries=10, **labels)  # fmt: skip
    yolos = YolosConfig(image_size=[INPUT_SIZE["height"], INPUT_SIZE["width"]], patch_size=16, hidden_size=32,
                        num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, num_detection_tokens=10,
                        **labels)  # fmt: skip
    folders = {}
    with torch.random.fork_rng():
        torch.manual_seed(0)
        for name, model, processor in (
            ("hf_detr", DetrForObjectDetection(detr), DetrImageProcessorPil(size=INPUT_SIZE, do_pad=False)),
            ("hf_yolos", YolosForObjectDetection(yolos), YolosImageProcessorPil(size=INPUT_SIZE, do_pad=False)),
        ):
            folders[name] = root / name
            model.eval().save_pretrained(folders[name])
            processor.save_pretrained(folders[name])
    return folders
