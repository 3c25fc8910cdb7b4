"""Reference CNN layers after the equations (1)-(20) of docs/derivation.md.

Layers follow one protocol (``forward``, ``backward``, ``params``, ``grads``; see
docs/ARCHITECTURE.md). ``cnn_ref.signal`` holds the derivation's primitives (conv2, xcorr2, rot180,
down, up), ``cnn_ref.functional`` the forward/backward pairs, ``cnn_ref.activations`` f and f'.
"""

from cnn_ref import activations, functional, signal
from cnn_ref.activation import Activation
from cnn_ref.conv import Conv2D
from cnn_ref.dense import Dense, Flatten
from cnn_ref.network import Sequential, lenet5
from cnn_ref.subsample import AvgPool2D, MaxPool2D, Subsample

__all__ = [
    "Activation",
    "AvgPool2D",
    "Conv2D",
    "Dense",
    "Flatten",
    "MaxPool2D",
    "Sequential",
    "Subsample",
    "activations",
    "functional",
    "lenet5",
    "signal",
]
