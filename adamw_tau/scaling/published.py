"""Public pretraining runs in τ terms: what their published lr, λ, batch and tokens amount to.

Only numbers quoted from each run's own paper, report or released config, with the source beside
the row; a run whose numbers could not be checked is left out. λ is read in torch form
(p ← p·(1 − lr·λ)), the form of PyTorch's, Megatron's and GPT-NeoX's AdamW. "4M" tokens is
taken as written (4e6); the runs' iteration counts are derived as tokens / batch unless the
source gives them.

τ_iter = 1/(η·λ) at the peak lr. These runs see their data about once, so an epoch is the whole
run's token count and τ_epoch = τ_iter / iterations, the fraction of the run the EMA spans —
except StableLM-3B-4E1T, which made 4 passes over 1T unique tokens: its epoch is 1T tokens.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..core import timescale

LLAMA1 = ("Touvron et al. 2023, LLaMA, arXiv:2302.13971, §2.3 (AdamW, weight decay 0.1) and Table 2 "
          "(lr, batch 4M tokens, tokens)")
LLAMA2 = ("Touvron et al. 2023, Llama 2, arXiv:2307.09288, §2.2 (weight decay 0.1) and Table 1 (LR, tokens; "
          "'global batch-size of 4M tokens')")
STABLELM = ("Tow et al. 2023, StableLM-3B-4E1T technical report and model card (1T tokens × 4 epochs, 256 GPUs); "
            "its config github.com/Stability-AI/StableLM configs/stablelm-3b-4e1t.yml (lr 3.2e-4, weight-decay "
            "0.1, train-iters 955,000, micro batch 4 × seq 4096 per GPU)")


@dataclass(frozen=True)
class Run:
    name: str
    lr: float               # peak learning rate
    weight_decay: float     # torch-form λ
    tokens: float           # tokens seen in the whole run
    batch_tokens: float     # tokens per optimizer step
    source: str
    iterations: float | None = None      # optimizer steps, where the source gives them
    unique_tokens: float | None = None   # one epoch, where the run repeats its data

    @property
    def iters(self) -> float:
        return self.iterations if self.iterations is not None else self.tokens / self.batch_tokens

    @property
    def tau_iters(self) -> float:
        return timescale.tau_iter_from_lambda(self.lr, self.weight_decay)

    @property
    def iters_per_epoch(self) -> float:
        return self.iters * (self.unique_tokens or self.tokens) / self.tokens

    @property
    def tau_epochs(self) -> float:
        return timescale.tau_epoch_from_tau_iter(self.tau_iters, self.iters_per_epoch)

    @property
    def tau_fraction(self) -> float:
        return self.tau_iters / self.iters


RUNS: list[Run] = [
    Run("LLaMA 7B", 3.0e-4, 0.1, 1.0e12, 4e6, LLAMA1),
    Run("LLaMA 13B", 3.0e-4, 0.1, 1.0e12, 4e6, LLAMA1),
    Run("LLaMA 33B", 1.5e-4, 0.1, 1.4e12, 4e6, LLAMA1),
    Run("LLaMA 65B", 1.5e-4, 0.1, 1.4e12, 4e6, LLAMA1),
    Run("Llama 2 7B", 3.0e-4, 0.1, 2.0e12, 4e6, LLAMA2),
    Run("Llama 2 13B", 3.0e-4, 0.1, 2.0e12, 4e6, LLAMA2),
    Run("Llama 2 34B", 1.5e-4, 0.1, 2.0e12, 4e6, LLAMA2),
    Run("Llama 2 70B", 1.5e-4, 0.1, 2.0e12, 4e6, LLAMA2),
    # 955,000 steps × 4 × 256 × 4096 = 4.0e12 tokens (the config's comment: "~= 4.0T tokens at bs=4M")
    Run("StableLM-3B-4E1T", 3.2e-4, 0.1, 955_000 * 4 * 256 * 4096, 4 * 256 * 4096, STABLELM,
        iterations=955_000, unique_tokens=1.0e12),
]


def _fmt_tokens(x: float) -> str:
    for unit, div in (("T", 1e12), ("B", 1e9), ("M", 1e6)):
        if x >= div:
            return f"{x / div:.3g}{unit}"
    return f"{x:.3g}"


def rows(runs=None) -> list[dict]:
    return [{"run": r.name, "lr": r.lr, "weight_decay": r.weight_decay, "tokens": r.tokens,
             "batch_tokens": r.batch_tokens, "iterations": r.iters, "tau_iters": r.tau_iters,
             "tau_epochs": r.tau_epochs, "tau_fraction_of_run": r.tau_fraction,
             "epoch_tokens": r.unique_tokens or r.tokens, "source": r.source} for r in (runs or RUNS)]


def markdown(runs=None) -> str:
    """The table as markdown, sources numbered under it."""
    runs = runs or RUNS
    sources: list[str] = []
    lines = ["| run | peak lr η | λ | tokens | batch (tokens) | iterations | τ_iter = 1/(ηλ) | τ_iter / iterations "
             "| τ_epoch | source |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        if r.source not in sources:
            sources.append(r.source)
        lines.append(f"| {r.name} | {r.lr:.1e} | {r.weight_decay:g} | {_fmt_tokens(r.tokens)} | "
                     f"{_fmt_tokens(r.batch_tokens)} | {r.iters:,.0f} | {r.tau_iters:,.0f} | {r.tau_fraction:.3f} | "
                     f"{r.tau_epochs:.3f} | [{sources.index(r.source) + 1}] |")
    lines.append("")
    lines += [f"[{i + 1}] {s}" for i, s in enumerate(sources)]
    return "\n".join(lines)
