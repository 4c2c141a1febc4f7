"""Alignment and fusion layers of kerasmtl.

`AdaptiveAveragePooling2D` and `AdaptiveMaxPooling2D` are Keras's own layers,
re-exported unchanged so that model code can import every building block from
one place.
"""

from keras.layers import AdaptiveAveragePooling2D, AdaptiveMaxPooling2D

from kerasmtl.layers.channel_projection import ChannelProjection
from kerasmtl.layers.concat_fusion import ConcatFusion
from kerasmtl.layers.cross_attention_fusion import CrossAttentionFusion
from kerasmtl.layers.cross_stitch import CrossStitch
from kerasmtl.layers.dselect_k_gate import DSelectKGate
from kerasmtl.layers.expert import Expert
from kerasmtl.layers.expert_mixture import ExpertMixture
from kerasmtl.layers.expert_stack import ExpertStack
from kerasmtl.layers.gate import Gate
from kerasmtl.layers.self_attention_fusion import SelfAttentionFusion
from kerasmtl.layers.spatial_alignment import SpatialAlignment
from kerasmtl.layers.task_attention import TaskAttention

__all__ = [
    "AdaptiveAveragePooling2D",
    "AdaptiveMaxPooling2D",
    "ChannelProjection",
    "ConcatFusion",
    "CrossAttentionFusion",
    "CrossStitch",
    "DSelectKGate",
    "Expert",
    "ExpertMixture",
    "ExpertStack",
    "Gate",
    "SelfAttentionFusion",
    "SpatialAlignment",
    "TaskAttention",
]
