"""bench/peak.py: the bytes alive at the peak of a training step, with and without the step inside backward."""
import torch

from adamw_tau.bench.peak import peak_bytes_per_param

SHAPES = [(64, 32), (32,), (32, 128), (128,), (128, 32), (32,)]


def test_peak_counts_every_gradient_with_the_ordinary_step():
    got = peak_bytes_per_param(SHAPES, torch.float32, False, backend="reference")
    assert got["grads"] == 4.0 and got["params"] == 4.0 and got["states"] == 8.0


def test_peak_inside_backward_counts_the_largest_gradient_only():
    """With buckets of one tensor, the gradients alive at the peak are one parameter's: the largest."""
    from adamw_tau.optim import step_in_backward
    n = sum(torch.Size(s).numel() for s in SHAPES)
    old = step_in_backward.BUCKET_NUMEL
    step_in_backward.BUCKET_NUMEL = 0
    try:
        got = peak_bytes_per_param(SHAPES, torch.bfloat16, True, backend="reference", master_weights="remainder")
    finally:
        step_in_backward.BUCKET_NUMEL = old
    assert got["grads"] == 2 * 128 * 32 / n
    assert got["params"] == 2.0 and got["remainder"] == 2.0
