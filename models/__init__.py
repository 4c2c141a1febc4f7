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
from kerasmtl.models.cross_stitch import cross_stitch
from kerasmtl.models.detection_loss import DetectionLoss
from kerasmtl.models.dselect_k import dselect_k
from kerasmtl.models.gate_weights import gate_weights
from kerasmtl.models.mmoe import mmoe
from kerasmtl.models.mtan import mtan
from kerasmtl.models.ple import cgc, ple
from kerasmtl.models.segment_and_detect import segment_and_detect
from kerasmtl.models.shared_bottom import shared_bottom
from kerasmtl.models.vision_language import vision_language

__all__ = [
    "DetectionLoss",
    "cgc",
    "classify_and_localize",
    "cross_stitch",
    "dselect_k",
    "gate_weights",
    "mmoe",
    "mtan",
    "ple",
    "segment_and_detect",
    "shared_bottom",
    "vision_language",
]
