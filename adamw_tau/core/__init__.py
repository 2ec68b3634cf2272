"""The contract: what the numbers are. The per-step scalars and stochastic-rounding bits
(contract), the step in PyTorch that every backend must match bit for bit (reference), and
the EMA timescale τ with its conversions (timescale). Imports nothing else of the package.
"""
