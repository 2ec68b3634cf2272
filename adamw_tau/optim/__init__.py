"""The optimizer: AdamWTau and the clear errors for bad input it raises before any write.
Imports core and launch.
"""
from .optimizer import AdamWTau

__all__ = ["AdamWTau"]
