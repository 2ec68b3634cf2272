"""A small causal transformer, nanoGPT-shaped: pre-norm blocks, ``scaled_dot_product_attention``,
GELU MLP, learned positions, byte vocabulary. Built for μP (``mup_param_groups``): the head size is
fixed, so width adds heads; the readout starts at zero; every init is fixed in width except the
hidden layers' 1/√fan_in.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    def __init__(self, width: int, head_dim: int, layers: int):
        super().__init__()
        if width % head_dim:
            raise ValueError(f"width {width} must be a multiple of head_dim {head_dim}")
        self.heads = width // head_dim
        self.ln1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.ln2 = nn.LayerNorm(width)
        self.fc = nn.Linear(width, 4 * width)
        self.fc_proj = nn.Linear(4 * width, width)
        for lin in (self.qkv, self.proj, self.fc, self.fc_proj):
            nn.init.normal_(lin.weight, 0.0, lin.in_features ** -0.5)
            nn.init.zeros_(lin.bias)
        for lin in (self.proj, self.fc_proj):  # residual branches, as GPT-2 scales them
            lin.weight.data.mul_((2 * layers) ** -0.5)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, c))
        return x + self.fc_proj(F.gelu(self.fc(self.ln2(x))))


class TinyGPT(nn.Module):
    def __init__(self, width: int, layers: int, ctx: int, head_dim: int = 64, vocab: int = 256):
        super().__init__()
        self.width, self.layers, self.ctx, self.vocab = width, layers, ctx, vocab
        self.tok = nn.Embedding(vocab, width)
        self.pos = nn.Embedding(ctx, width)
        self.blocks = nn.ModuleList(Block(width, head_dim, layers) for _ in range(layers))
        self.ln_f = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab, bias=False)
        nn.init.normal_(self.tok.weight, 0.0, 1.0)
        nn.init.normal_(self.pos.weight, 0.0, 1.0)
        nn.init.zeros_(self.head.weight)

    def forward(self, idx):
        x = self.tok(idx) + self.pos.weight[: idx.shape[1]]
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.ln_f(x))

    def loss(self, xy):
        """Mean cross-entropy (nats per byte) of predicting xy[:, 1:] from xy[:, :-1]."""
        logits = self(xy[:, :-1])
        return F.cross_entropy(logits.float().reshape(-1, self.vocab), xy[:, 1:].reshape(-1))


def matmul_params(width: int, layers: int, vocab: int = 256) -> int:
    """Weights that take part in a matmul per token: 12·L·d² in the blocks plus the readout."""
    return 12 * layers * width * width + vocab * width


def flops_per_token(width: int, layers: int, ctx: int, vocab: int = 256) -> float:
    """Training FLOPs per token: 6·N for the matmuls (forward and backward) plus 12·L·ctx·d for attention
    scores and values (Kaplan et al. 2020's count, causal masking not discounted)."""
    return 6.0 * matmul_params(width, layers, vocab) + 12.0 * layers * ctx * width
