"""Task-weighting strategies and their registry (`get`, `serialize`, `deserialize`)."""

import inspect
import re

import keras

from kerasmtl.weighting.aligned_mtl import AlignedMTL
from kerasmtl.weighting.base_weighting import Weighting
from kerasmtl.weighting.cagrad import CAGrad
from kerasmtl.weighting.dbmtl import DBMTL
from kerasmtl.weighting.dwa import DWA
from kerasmtl.weighting.equal import Equal
from kerasmtl.weighting.famo import FAMO
from kerasmtl.weighting.fixed import Fixed
from kerasmtl.weighting.gls import GLS
from kerasmtl.weighting.grad_norm import GradNorm
from kerasmtl.weighting.grad_vac import GradVac
from kerasmtl.weighting.imtlg import IMTLG
from kerasmtl.weighting.learned_softmax import LearnedSoftmax
from kerasmtl.weighting.loss_ratio import LossRatio
from kerasmtl.weighting.mgda import MGDA
from kerasmtl.weighting.mgdaub import MGDAUB
from kerasmtl.weighting.nash_mtl import NashMTL
from kerasmtl.weighting.pcgrad import PCGrad
from kerasmtl.weighting.rlw import RLW
from kerasmtl.weighting.uncertainty import Uncertainty
from kerasmtl.weighting.upgrad import UPGrad

ALL_OBJECTS = {
    PCGrad,
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
    DWA,
    FAMO,
    GLS,
    LearnedSoftmax,
    LossRatio,
    RLW,
    Uncertainty,
    Equal,
    Fixed,
}


def registry_name(name):
    """The registry's snake-case name of a class name; acronyms stay whole.

    `"DWA"` -> `"dwa"`, `"PCGrad"` -> `"pcgrad"`, `"NashMTL"` -> `"nash_mtl"`.
    """
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


ALL_OBJECTS_DICT = {cls.__name__: cls for cls in ALL_OBJECTS}
ALL_OBJECTS_DICT.update({registry_name(cls.__name__): cls for cls in ALL_OBJECTS})
ALL_OBJECTS_DICT.update({cls.__name__.lower(): cls for cls in ALL_OBJECTS})


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

    Raises:
        ValueError: for an unknown name, listing the valid names.
    """
    if identifier is None:
        return Equal()
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
