"""A byte n-gram baseline on the LM sweep's evaluation windows: interpolated Witten-Bell smoothing
(Witten & Bell 1991; Chen & Goodman 1998, §2.5), trained on the same training prefix as the model
and scored on the same targets with the same context (the bytes before the target within its
window, so the first targets see fewer than n−1 bytes and fall back to the lower orders).

P_k(w | h) = (c(h, w) + T(h) · P_{k−1}(w | h')) / (c(h) + T(h)), with h the last k bytes, h' its last
k−1, c counts, T(h) the number of distinct bytes that follow h; P_k = P_{k−1} where h was never
seen; P_0 is the add-one unigram over 256 bytes.
"""
from __future__ import annotations

import numpy as np
import torch

from .corpus import eval_windows

VOCAB = 256


def _keys(ids: np.ndarray, k: int) -> np.ndarray:
    """Key of each (k-byte history, next byte) pair along a stream: an integer in base 256."""
    n = ids.shape[-1]
    key = np.zeros(ids.shape[:-1] + (n - k,), dtype=np.int64)
    for j in range(k + 1):
        key = key * VOCAB + ids[..., j:n - k + j]
    return key


class NGram:
    """Interpolated Witten-Bell byte model of order ``order`` (histories of up to order−1 bytes)."""

    def __init__(self, train: np.ndarray, order: int):
        if not 1 <= order <= 7:
            raise ValueError(f"order must be 1..7 (histories fit an int64 key), got {order}")
        train = np.asarray(train, dtype=np.int64)
        self.order = order
        uni = np.bincount(train, minlength=VOCAB).astype(np.float64)
        self.p0 = (uni + 1.0) / (uni.sum() + VOCAB)
        self.tables = []  # per history length k ≥ 1: sorted pair keys and counts, sorted history keys, c(h), T(h)
        for k in range(1, order):
            pairs, c_pair = np.unique(_keys(train, k), return_counts=True)
            hist, first = np.unique(pairs // VOCAB, return_index=True)
            c_hist = np.add.reduceat(c_pair, first)
            t_hist = np.diff(np.append(first, pairs.size))
            self.tables.append((pairs, c_pair, hist, c_hist, t_hist))

    @staticmethod
    def _lookup(sorted_keys, values, keys):
        i = np.clip(np.searchsorted(sorted_keys, keys), 0, sorted_keys.size - 1)
        hit = sorted_keys[i] == keys
        return np.where(hit, values[i], 0)

    def nll(self, windows: np.ndarray) -> np.ndarray:
        """−log P of every target windows[:, 1:], each from the bytes before it in its window."""
        w = np.asarray(windows, dtype=np.int64)
        targets = w[:, 1:]
        p = self.p0[targets]
        pos = np.arange(1, w.shape[1])[None, :].repeat(w.shape[0], 0)  # bytes of history available
        for k, (pairs, c_pair, hist, c_hist, t_hist) in enumerate(self.tables, start=1):
            if k >= w.shape[1]:
                break  # no target in these windows has k bytes before it
            # the pair (last k bytes, target) for targets at position ≥ k; padded on the left elsewhere
            keys = np.full(targets.shape, -1, dtype=np.int64)
            keys[:, k - 1:] = _keys(w, k)
            ok = pos >= k
            c_hw = self._lookup(pairs, c_pair, keys).astype(np.float64)
            c_h = self._lookup(hist, c_hist, keys // VOCAB).astype(np.float64)
            t_h = self._lookup(hist, t_hist, keys // VOCAB).astype(np.float64)
            seen = ok & (c_h > 0)
            p = np.where(seen, (c_hw + t_h * p) / np.where(seen, c_h + t_h, 1.0), p)
        return -np.log(p)


def baseline(train: torch.Tensor, val: torch.Tensor, ctx: int, windows: int, orders=(1, 2, 3, 4, 5, 6)) -> dict:
    """Mean nats per byte of each order on the evaluation windows, trained on ``train``."""
    tr = train.numpy().astype(np.int64)
    win = eval_windows(val, ctx, windows).numpy().astype(np.int64)
    return {k: float(NGram(tr, k).nll(win).mean()) for k in orders}
