"""`SoftSharingModel`, the former name of `kerasmtl.SoftSharing` (kept as an alias)."""

from kerasmtl.soft_sharing import SoftSharing

#: The former name of `SoftSharing`: the same class.
SoftSharingModel = SoftSharing
