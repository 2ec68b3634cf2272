"""State formats: how a state the optimizer keeps is laid out in memory, bit for bit.

One module per format, each stating which state tensors it owns (dtype and shape), how
they are encoded and decoded with integer ops and comparisons only, and its rules for ties,
zeros and NaN (docs/numerics.md gives the same rules in prose). Everything here is plain
PyTorch on integers and exact fp32 values: the reference step (core/reference.py), the
optimizer's state-dict conversions and the tests use these functions, and every kernel
implements the same rules.

- ``bf16_remainder``: an exact fp32 master kept as the bf16 param plus an int16 remainder.
- ``q8_blockwise``: exp_avg / exp_avg_sq as 8-bit codes with one fp32 scale per 256 elements.
"""
