"""Forward/backward pairs of the reference layers (``impl="literal" | "fast"``).

``u`` is the pre-activation (U in docs/derivation.md) and ``dy`` the delta ``dJ/dU``; see
docs/ARCHITECTURE.md for the contracts.
"""

from cnn_ref.functional.conv import conv2d_backward, conv2d_forward
from cnn_ref.functional.dense import dense_backward, dense_forward
from cnn_ref.functional.subsample import subsample_backward, subsample_forward

__all__ = [
    "conv2d_backward",
    "conv2d_forward",
    "dense_backward",
    "dense_forward",
    "subsample_backward",
    "subsample_forward",
]
