"""``adamw-tau sweep``: the seeds' experiments run with AdamWTau: ridge and dataset on linear
models (linear_sweeps), μP width (width_sweep), and a byte-level LM on the standard library
(lm/). Imports optim and scaling; nothing imports it but the cli.
"""
