"""Preprocessing constants shared by models and deployable specs (no torch import: the CLI reads them)."""

from attnserve.catalogue import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "RESIZE_MODES"]

RESIZE_MODES = ("squash", "letterbox", "crop")
"""How `attnserve train --resize` fits a user's images to the input (`attnserve.preprocessing`)."""
