"""What the quality checks share: their configs, the model and its init, the data order (one pass
over a fixed token budget), the param groups in τ form (ours) and the λ that equals it (torch's
form, for the anchors), the schedule, evaluation, and a run's record (losses, validation points,
its error if it failed).
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field, replace

import torch

from ...core import timescale
from ..lm import corpus as stdlib_corpus
from ..lm.tiny_gpt import TinyGPT
from ..lm.train import cosine_schedule, evaluate


@dataclass(frozen=True)
class QualityConfig:
    name: str
    width: int
    layers: int
    ctx: int
    batch: int
    head_dim: int
    steps: int
    lr: float
    tau_frac: float        # τ_iter as a fraction of the run
    warmup_frac: float
    eval_every: int        # validation every this many steps, and at the last
    log_every: int         # one point of the training-loss curve per this many steps
    val_windows: int       # windows of ctx + 1 bytes spread over the validation split
    seed: int = 0
    betas: tuple = (0.9, 0.999)
    eps: float = 1e-8
    threads: int = 1       # CPU threads a process (the bits of a CPU matmul can depend on it)

    def __post_init__(self):
        if self.steps < 1 or self.log_every < 1 or self.eval_every < 1:
            raise ValueError(f"config {self.name}: steps, log_every and eval_every must be >= 1, got {self.steps}, "
                             f"{self.log_every}, {self.eval_every}")
        if self.tau_iters < 1.0:
            raise ValueError(f"config {self.name}: τ_iter = tau_frac x steps = {self.tau_iters:g} would decay by more "
                             "than the weight in one step at the peak lr; raise tau_frac or steps")

    @property
    def tau_iters(self) -> float:
        return self.tau_frac * self.steps

    @property
    def tokens(self) -> int:
        return self.steps * self.batch * self.ctx

    @property
    def weight_decay(self) -> float:
        """torch-form λ that gives this τ_iter at the peak lr: lr_t·λ = (lr_t / lr_peak) / τ_iter."""
        return timescale.lambda_from_tau_iter(self.lr, self.tau_iters)


# [note: the settings] lr 1e-2 was the best of the medium LM sweep's pilots at width 64 (README,
# "sweep lm --medium"); τ_iter is 1/8 of the run, inside the 3-19% that published pretraining runs
# use (`adamw-tau published`). Width 64 puts 99% of the parameters in tensors of >= 4096 elements,
# the ones 8-bit states quantize (bnb's min_8bit_size, torchao's rule, our q8_min_numel). One
# pass: every training byte is seen once, so validation measures the optimizer, not overfitting.
# Speed (2-core CPU, one thread a process, fp32, width 64, ctx 64, batch 32): 38 ms a step.
STATES_QUICK = QualityConfig(name="quick", width=64, layers=2, ctx=64, batch=32, head_dim=16, steps=600, lr=1e-2,
                             tau_frac=0.125, warmup_frac=0.02, eval_every=100, log_every=20, val_windows=512)
STATES_FULL = QualityConfig(name="full", width=128, layers=2, ctx=128, batch=32, head_dim=16, steps=2000, lr=1e-2,
                            tau_frac=0.125, warmup_frac=0.02, eval_every=250, log_every=50, val_windows=1024)
# bf16 params (batch 16: 37 ms a step a run at width 64); three runs step in lockstep
MASTERS_QUICK = QualityConfig(name="quick", width=64, layers=2, ctx=64, batch=16, head_dim=16, steps=400, lr=1e-2,
                              tau_frac=0.125, warmup_frac=0.02, eval_every=100, log_every=10, val_windows=512)
MASTERS_FULL = QualityConfig(name="full", width=64, layers=2, ctx=64, batch=32, head_dim=16, steps=2000, lr=1e-2,
                             tau_frac=0.125, warmup_frac=0.02, eval_every=250, log_every=25, val_windows=1024)


def vary(cfg: QualityConfig, lr: float | None = None, seed: int | None = None) -> QualityConfig:
    """The config with another peak lr or seed, its name saying so (the output files carry the name)."""
    name = cfg.name
    if lr is not None and lr != cfg.lr:
        if not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"--lr must be a finite number > 0, got {lr!r}")
        name += f"_lr{lr:g}"
    if seed is not None and seed != cfg.seed:
        if seed < 0:
            raise ValueError(f"--seed must be >= 0, got {seed}")
        name += f"_seed{seed}"
    return replace(cfg, name=name, lr=cfg.lr if lr is None else lr, seed=cfg.seed if seed is None else seed)


def load_corpus(cfg: QualityConfig):
    """The stdlib corpus, checked to hold the config's token budget in one pass."""
    corpus = stdlib_corpus.load()
    if cfg.tokens + 1 > corpus.train.numel():
        info = corpus.describe()
        raise ValueError(f"the {cfg.name} config trains on {cfg.tokens} bytes in one pass ({cfg.steps} steps of "
                         f"{cfg.batch} x {cfg.ctx}), but this Python's stdlib corpus has {corpus.train.numel()} "
                         f"training bytes ({info['python']}, sha256 {info['corpus_sha256']}): lower the steps")
    return corpus


def batches(corpus, cfg: QualityConfig, device) -> torch.Tensor:
    """[steps, batch, ctx + 1] windows: the first ``tokens`` bytes of the training stream cut into
    windows (each overlapping the next by one byte), in one seeded order; the same in every run."""
    data = corpus.train[: cfg.tokens + 1].to(device=device, dtype=torch.long)
    starts = torch.arange(cfg.steps * cfg.batch) * cfg.ctx
    order = torch.randperm(starts.numel(), generator=torch.Generator().manual_seed(2000 + cfg.seed))
    idx = starts[order].to(device)[:, None] + torch.arange(cfg.ctx + 1, device=device)
    return data[idx].view(cfg.steps, cfg.batch, cfg.ctx + 1)


def build_model(cfg: QualityConfig, dtype: torch.dtype, device) -> TinyGPT:
    """The same init bits in every run of a seed (drawn in fp32, then cast)."""
    torch.manual_seed(1000 + cfg.seed)
    return TinyGPT(cfg.width, cfg.layers, cfg.ctx, cfg.head_dim).to(device=device, dtype=dtype)


def _decay_split(params) -> tuple[list, list]:
    """Matrices and embeddings are decayed; vectors (norm gains, biases) are not."""
    params = list(params.parameters() if isinstance(params, torch.nn.Module) else params)
    return [p for p in params if p.ndim >= 2], [p for p in params if p.ndim < 2]


def tau_groups(params, cfg: QualityConfig) -> list[dict]:
    """AdamWTau's groups over a model's (or a list of) parameters: τ_iter on the decayed ones."""
    mats, vecs = _decay_split(params)
    return [{"params": mats, "tau_iters": cfg.tau_iters}, {"params": vecs, "weight_decay": 0.0}]


def lambda_groups(params, cfg: QualityConfig) -> list[dict]:
    """torch-form groups (the anchors): the λ that gives the same decay per step as tau_groups."""
    mats, vecs = _decay_split(params)
    return [{"params": mats, "weight_decay": cfg.weight_decay}, {"params": vecs, "weight_decay": 0.0}]


def scheduler(opt, cfg: QualityConfig):
    return torch.optim.lr_scheduler.LambdaLR(opt, cosine_schedule(cfg.steps, max(1, int(cfg.warmup_frac * cfg.steps))))


def val_loss(model: TinyGPT, corpus, cfg: QualityConfig, device) -> float:
    return evaluate(model, corpus.val, cfg, torch.device(device), contextlib.nullcontext)


def error_text(e: BaseException) -> str:
    """An exception as one CSV-safe line: its type and message."""
    return f"{type(e).__name__}: {' '.join(str(e).split())}"


def state_bytes(opt, params) -> int:
    """Bytes of the optimizer's state for ``params`` (step counters left out), each storage counted
    once, tensor subclasses (torchao's 8-bit states) by the tensors they hold."""
    seen, total = set(), 0

    def add(t: torch.Tensor) -> None:
        nonlocal total
        if hasattr(t, "__tensor_flatten__") and type(t) is not torch.Tensor and not isinstance(t, torch.nn.Parameter):
            names, _ = t.__tensor_flatten__()
            for n in names:
                add(getattr(t, n))
            return
        s = t.untyped_storage()
        key = (s.device, s.data_ptr())
        if key not in seen:
            seen.add(key)
            total += s.nbytes()

    for p in params:
        for k, v in opt.state.get(p, {}).items():
            if k != "step" and isinstance(v, torch.Tensor):
                add(v)
    return total


@dataclass
class Run:
    """One training run: its model, optimizer and schedule, the loss of every step, the
    validation points, and why it stopped if it did."""
    name: str
    model: TinyGPT | None = None
    opt: object = None
    sched: object = None
    losses: list = field(default_factory=list)
    vals: dict = field(default_factory=dict)   # step -> validation loss
    error: str = ""

    @property
    def alive(self) -> bool:
        return not self.error and self.model is not None

    def backward(self, xy: torch.Tensor) -> None:
        loss = self.model.loss(xy)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.losses.append(float(loss.detach()))

    def step(self) -> None:
        self.opt.step()
        self.sched.step()
        if not math.isfinite(self.losses[-1]):
            self.error = f"diverged: loss {self.losses[-1]} at step {len(self.losses)}"

    def curve(self, cfg: QualityConfig) -> list[dict]:
        """The training-loss curve (the mean over each log_every steps) with the validation points."""
        out = []
        for end in range(cfg.log_every, len(self.losses) + 1, cfg.log_every):
            window = self.losses[end - cfg.log_every:end]
            out.append(dict(run=self.name, step=end, tokens=end * cfg.batch * cfg.ctx,
                            train_loss=sum(window) / len(window), val_loss=self.vals.get(end, float("nan"))))
        logged = {r["step"] for r in out}
        out += [dict(run=self.name, step=s, tokens=s * cfg.batch * cfg.ctx, train_loss=float("nan"), val_loss=v)
                for s, v in self.vals.items() if s not in logged]
        return sorted(out, key=lambda r: r["step"])

    def final_train(self, cfg: QualityConfig) -> float:
        """The mean training loss over the last log_every steps (nan if the run did not finish)."""
        if len(self.losses) < cfg.steps:
            return float("nan")
        tail = self.losses[-cfg.log_every:]
        return sum(tail) / len(tail)

    def final_val(self, cfg: QualityConfig) -> float:
        return self.vals.get(cfg.steps, float("nan")) if len(self.losses) >= cfg.steps else float("nan")


def should_eval(step: int, cfg: QualityConfig) -> bool:
    return step % cfg.eval_every == 0 or step == cfg.steps


@contextlib.contextmanager
def cpu_threads(cfg: QualityConfig, device):
    """The config's thread count on the CPU for the block, the caller's afterwards."""
    before = torch.get_num_threads()
    if torch.device(device).type == "cpu" and cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def default_backend(device) -> str:
    """AdamWTau's backend: auto on a GPU; on the CPU the reference, which needs no C++ build (the
    optimizer step is a small part of a TinyGPT step: README, "sweep lm --medium")."""
    return "auto" if torch.device(device).type == "cuda" else "reference"
