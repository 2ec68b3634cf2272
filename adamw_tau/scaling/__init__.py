"""The scaling rules: μP parameter groups (mup), moving a tuned λ to another scale with
τ_epoch fixed (transfer), and published runs in τ terms (published). Imports core only.
"""
from .mup import mup_param_groups

__all__ = ["mup_param_groups"]
