"""The contract: what the numbers are. The per-step scalars and stochastic-rounding bits
(contract), the step in PyTorch that every backend must match bit for bit (reference), and
the EMA timescale τ with its conversions (timescale). Imports formats only: the reference
encodes and decodes states with the formats' own code.
"""
