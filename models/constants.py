"""Preprocessing constants shared by models and deployable specs (no torch import: the CLI reads them)."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

RESIZE_MODES = ("squash", "letterbox", "crop")
"""How `attnserve train --resize` fits a user's images to the input (`attnserve.preprocessing`)."""
