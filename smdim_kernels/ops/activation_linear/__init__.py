from .interface import activation_linear
from .reference import ACTIVATIONS, activation_linear_ref

__all__ = ["ACTIVATIONS", "activation_linear", "activation_linear_ref"]
