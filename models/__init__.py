"""Ready multi-task architectures built from the pieces of kerasmtl.

Each builder returns an uncompiled `kerasmtl.MultiTaskModel` whose tasks carry
their losses and metrics, so `model.compile(optimizer="adam")` is enough:

- `classify_and_localize`: image -> class (`"label"`) + box (`"box"`).
- `segment_and_detect`: image -> per-pixel classes (`"segmentation"`) + grid
  detections (`"detection"`, trained with `DetectionLoss`).
- `vision_language`: image + tokens -> image-text match (`"match"`) + image
  class (`"label"`), fused by cross-attention.
"""

from kerasmtl.models.classify_and_localize import classify_and_localize
from kerasmtl.models.detection_loss import DetectionLoss
from kerasmtl.models.segment_and_detect import segment_and_detect
from kerasmtl.models.vision_language import vision_language

__all__ = [
    "DetectionLoss",
    "classify_and_localize",
    "segment_and_detect",
    "vision_language",
]
