"""Task-weighting strategies and their registry (`get`, `serialize`, `deserialize`)."""

import inspect
import re

import keras

from kerasmtl.weighting.aligned_mtl import AlignedMTL
from kerasmtl.weighting.auto_lambda import AutoLambda
from kerasmtl.weighting.base_weighting import Weighting
from kerasmtl.weighting.cagrad import CAGrad
from kerasmtl.weighting.con_fig import ConFIG
from kerasmtl.weighting.dbmtl import DBMTL
from kerasmtl.weighting.dual_proj import DualProj
from kerasmtl.weighting.dwa import DWA
from kerasmtl.weighting.equal import Equal
from kerasmtl.weighting.excess_mtl import ExcessMTL
from kerasmtl.weighting.fair_grad import FairGrad
from kerasmtl.weighting.famo import FAMO
from kerasmtl.weighting.fixed import Fixed
from kerasmtl.weighting.gls import GLS
from kerasmtl.weighting.grad_drop import GradDrop
from kerasmtl.weighting.grad_norm import GradNorm
from kerasmtl.weighting.grad_vac import GradVac
from kerasmtl.weighting.imtl import IMTL
from kerasmtl.weighting.imtlg import IMTLG
from kerasmtl.weighting.learned_softmax import LearnedSoftmax
from kerasmtl.weighting.loss_ratio import LossRatio
from kerasmtl.weighting.mgda import MGDA
from kerasmtl.weighting.mgdaub import MGDAUB
from kerasmtl.weighting.nash_mtl import NashMTL
from kerasmtl.weighting.pcgrad import PCGrad
from kerasmtl.weighting.rlw import RLW
from kerasmtl.weighting.stch import STCH
from kerasmtl.weighting.uncertainty import Uncertainty
from kerasmtl.weighting.upgrad import UPGrad

ALL_OBJECTS = {
    PCGrad,
    GradDrop,
    GradVac,
    IMTLG,
    AlignedMTL,
    DBMTL,
    GradNorm,
    CAGrad,
    MGDA,
    MGDAUB,
    NashMTL,
    UPGrad,
    DualProj,
    FairGrad,
    ConFIG,
    IMTL,
    ExcessMTL,
    DWA,
    FAMO,
    AutoLambda,
    GLS,
    LearnedSoftmax,
    LossRatio,
    RLW,
    STCH,
    Uncertainty,
    Equal,
    Fixed,
}


# Class names that the snake-case rule would split inside an acronym.
_REGISTRY_NAMES = {"ConFIG": "config"}


def registry_name(name):
    """The registry's snake-case name of a class name; acronyms stay whole.

    `"DWA"` -> `"dwa"`, `"PCGrad"` -> `"pcgrad"`, `"NashMTL"` -> `"nash_mtl"`,
    `"ConFIG"` -> `"config"`.
    """
    if name in _REGISTRY_NAMES:
        return _REGISTRY_NAMES[name]
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


#: Names used by LibMTL (`LibMTL.weighting`) and TorchJD (`torchjd.aggregation`)
#: for the same methods. Names the class names already give (`MGDA`, `PCGrad`,
#: `UPGrad`, `IMTLG`, `CAGrad`, `Nash_MTL`, `Aligned_MTL`, ...) need no entry.
#: LibMTL's `IMTL` is the full method (IMTL-L + IMTL-G), our `IMTL`; its `EW`
#: sums the losses with weight 1 (its docstring says `1 / T`, its code uses
#: ones), our `Equal`. TorchJD's `Sum` is `Equal`; its `Mean` (weights `1/K`)
#: and `Random` (`softmax` of a normal sample, summing to 1) are `Equal` and
#: `RLW` on the kit's scale, where weights sum to `K` (same direction, a step
#: `K` times larger); `Constant` (given weights) is `Fixed`. TorchJD's
#: `GradDrop` is our `GradDrop` (its class name). Methods the kit
#: does not have (MoCo, Krum, TrimmedMean, ...) are not aliased.
ALIASES = {
    "EW": Equal,
    "UW": Uncertainty,
    "DB_MTL": DBMTL,
    "Nash_MTL": NashMTL,
    "Aligned_MTL": AlignedMTL,
    "Sum": Equal,
    "Mean": Equal,
    "Random": RLW,
    "Constant": Fixed,
    # The official Auto-Lambda code's name (`--weight autol`).
    "autol": AutoLambda,
}

ALL_OBJECTS_DICT = {cls.__name__: cls for cls in ALL_OBJECTS}
ALL_OBJECTS_DICT.update({registry_name(cls.__name__): cls for cls in ALL_OBJECTS})
ALL_OBJECTS_DICT.update({cls.__name__.lower(): cls for cls in ALL_OBJECTS})
ALL_OBJECTS_DICT.update(ALIASES)
ALL_OBJECTS_DICT.update({name.lower(): cls for name, cls in ALIASES.items()})


def serialize(weighting):
    """Returns the Keras config of a strategy."""
    return keras.saving.serialize_keras_object(weighting)


def deserialize(config, custom_objects=None):
    """Returns a strategy from a config made by `serialize`."""
    return keras.saving.deserialize_keras_object(
        config, module_objects=ALL_OBJECTS_DICT, custom_objects=custom_objects
    )


def get(identifier):
    """Returns a strategy from a name (`"dwa"`, `"DWA"`), a config dict or an instance.

    Names are the registry's snake-case names, the class names, and LibMTL's and
    TorchJD's names for the same methods (`"EW"`, `"UW"`, `"DB_MTL"`, `"Sum"`,
    see `ALIASES`). `None` gives `Fixed()` (every weight 1), the strategy
    `MultiTaskModel.compile` uses when given no `weighting` (with the tasks'
    `loss_weight`s, all 1 by default).

    Raises:
        ValueError: for an unknown name, listing the valid names.
    """
    if identifier is None:
        return Fixed()
    if isinstance(identifier, Weighting):
        return identifier
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if isinstance(identifier, str):
        cls = ALL_OBJECTS_DICT.get(identifier) or ALL_OBJECTS_DICT.get(identifier.lower())
        if cls is None:
            names = sorted({registry_name(c.__name__) for c in ALL_OBJECTS})
            raise ValueError(
                f"Unknown weighting strategy '{identifier}'. Valid names: {names}. "
                f"Received: identifier={identifier!r}"
            )
        return cls()
    if inspect.isclass(identifier) and issubclass(identifier, Weighting):
        return identifier()
    raise TypeError(
        "Expected a weighting strategy: a name, a config dict or a `Weighting` instance. "
        f"Received: identifier={identifier!r} of type {type(identifier).__name__}"
    )
