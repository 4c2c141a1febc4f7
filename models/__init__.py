"""Ready multi-task architectures built from the pieces of kerasmtl.

Each architecture is a `kerasmtl.MultiTaskModel` subclass (`MMoE`, `PLE`, ...)
whose config holds its hyper-parameters (`from_config` rebuilds it, and a
`.keras` file loads back as the same class); the lower-case builder functions
return them. Each is returned uncompiled, its tasks carrying their losses and
metrics, so `model.compile(optimizer="adam")` is enough:

- `classify_and_localize` (`ClassifyAndLocalize`): image -> class (`"label"`) + box (`"box"`).
- `segment_and_detect` (`SegmentAndDetect`): image -> per-pixel classes (`"segmentation"`) + grid
  detections (`"detection"`, trained with `DetectionLoss`).
- `vision_language` (`VisionLanguage`): image + tokens -> image-text match (`"match"`) + image
  class (`"label"`), fused by cross-attention.

Architectures that route features per task (any list of tasks, dense, tabular or
image inputs):

- `shared_bottom` (`SharedBottom`): one shared bottom, a tower per task.
- `mmoe` (`MMoE`): multi-gate mixture of experts (Ma et al., KDD 2018).
- `cgc`, `ple` (`CGC`, `PLE`): customized gate control and progressive layered extraction
  (Tang et al., RecSys 2020).
- `cross_stitch` (`CrossStitchNetwork`): one column per task, mixed by cross-stitch units
  (Misra et al., CVPR 2016).
- `mtan` (`MTAN`): task attention over a shared encoder's stages (Liu et al., CVPR 2019).
- `dselect_k` (`DSelectK`): experts chosen by DSelect-k gates (Hazimeh et al., NeurIPS 2021).
- `ESMM`, `AITM`: click-to-conversion funnels over tabular inputs (Ma et al.,
  SIGIR 2018; Xi et al., KDD 2021).
- `gate_weights(model, x)`: how each task's gate weights the experts.

The mixtures' stacked expert outputs (layer `"experts"`) are their shared
representation: they train with `compile(gradients="representation")`.
"""

from kerasmtl.models.aitm import AITM
from kerasmtl.models.cgc import CGC, cgc
from kerasmtl.models.classify_and_localize import ClassifyAndLocalize, classify_and_localize
from kerasmtl.models.cross_stitch import CrossStitchNetwork, cross_stitch
from kerasmtl.models.detection_loss import DetectionLoss
from kerasmtl.models.dselect_k import DSelectK, dselect_k
from kerasmtl.models.esmm import ESMM
from kerasmtl.models.gate_weights import gate_weights
from kerasmtl.models.mmoe import MMoE, mmoe
from kerasmtl.models.mtan import MTAN, mtan
from kerasmtl.models.ple import PLE, ple
from kerasmtl.models.segment_and_detect import SegmentAndDetect, segment_and_detect
from kerasmtl.models.shared_bottom import SharedBottom, shared_bottom
from kerasmtl.models.vision_language import VisionLanguage, vision_language

__all__ = [
    "AITM",
    "CGC",
    "ClassifyAndLocalize",
    "CrossStitchNetwork",
    "DSelectK",
    "DetectionLoss",
    "ESMM",
    "MMoE",
    "MTAN",
    "PLE",
    "SegmentAndDetect",
    "SharedBottom",
    "VisionLanguage",
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
