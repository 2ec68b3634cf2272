"""``adamw-tau bench --memory``: the bytes per parameter each optimizer configuration holds
after one step (params, grads, moments, master, remainders, scales), counted from its
tensors, on the GPT-2-124M shapes; torch's AdamW and the 8-bit anchors beside ours. Beside
them the peak: the most bytes per parameter alive at any point of a training step's backward
and step (peak.py), where the step inside backward differs from the ordinary step.

[note: counting, not a formula] After one step the counter adds up distinct untyped storages,
each storage's nbytes once. It looks, in this order, at the params, their grads, every
``opt.state`` entry, then whatever else the optimizer object reaches (param groups, caches,
launch tables). A storage reached twice counts once, under the first category that reached it:
bitsandbytes' qmap shared by every param, a state kept as views of one flat buffer, a param a
bucket holds again. A tensor subclass (torchao's OptimState8bit: codes, scale, qmap) counts its
inner tensors. A configuration that cannot be built or stepped still gets a row, which says
why; so does one whose option was accepted but had no effect (see ``NEEDS``).
"""
from __future__ import annotations

import gc
import importlib
import math
import time
import types
from dataclasses import asdict, dataclass, field

import torch

from ..optim.optimizer import AdamWTau
from ..testing.parity import Path
from .ledger import CATEGORIES, Ledger, count
from .peak import peak_of_a_training_step
from .timing import time_ms, why
from .workloads import gpt2_124m_shapes, gpt2_shapes, make_params

ANCHORS = {"torchao": ("torchao.optim", "torchao==0.18.0"), "bnb": ("bitsandbytes.optim", "bitsandbytes==0.50.2")}
EXTRA = "anchors"  # pyproject.toml: pip install 'adamw-tau[anchors]'


@dataclass(frozen=True)
class Config:
    """One row: ``impl`` is "torch", "ours", "torchao" or "bnb"; ``options`` go to its
    constructor; ``needs`` names what opt.state must hold after a step for the row to be
    what its name says (a key of NEEDS)."""
    name: str
    impl: str
    param_dtype: torch.dtype
    options: dict = field(default_factory=dict)
    needs: str | None = None
    cls: str = "AdamW8bit"  # an anchor's optimizer class


BF16 = torch.bfloat16
CONFIGS = (
    Config("torch AdamW, fp32", "torch", torch.float32),
    Config("torch AdamW, bf16 params (bf16 states, no master)", "torch", BF16),
    Config("ours, fp32", "ours", torch.float32),
    Config("ours, bf16 + fp32 master, fp32 states", "ours", BF16, {"master_weights": True}),
    Config("ours, bf16 + fp32 master, bf16 states", "ours", BF16, {"master_weights": True, "state_dtype": BF16}),
    Config("ours, bf16 + remainder, fp32 states", "ours", BF16, {"master_weights": "remainder"}, "remainder"),
    Config("ours, bf16 + remainder, bf16 states", "ours", BF16,
           {"master_weights": "remainder", "state_dtype": BF16}, "remainder"),
    Config("ours, bf16 + stochastic rounding, bf16 states", "ours", BF16,
           {"stochastic_rounding": True, "state_dtype": BF16}),
    Config("ours, fp32, 8-bit states", "ours", torch.float32, {"state_dtype": "8bit"}, "8bit"),
    Config("ours, bf16 + fp32 master, 8-bit states", "ours", BF16,
           {"master_weights": True, "state_dtype": "8bit"}, "8bit"),
    Config("ours, bf16 + remainder, 8-bit states", "ours", BF16,
           {"master_weights": "remainder", "state_dtype": "8bit"}, "remainder+8bit"),
    Config("ours, fp32, 4-bit states", "ours", torch.float32, {"state_dtype": "4bit"}, "4bit"),
    Config("ours, bf16 + remainder, 4-bit states", "ours", BF16,
           {"master_weights": "remainder", "state_dtype": "4bit"}, "remainder+4bit"),
    Config("ours, fp32, step in backward", "ours", torch.float32, {"step_in_backward": True}),
    Config("ours, bf16 + remainder, 8-bit states, step in backward", "ours", BF16,
           {"master_weights": "remainder", "state_dtype": "8bit", "step_in_backward": True}, "remainder+8bit"),
    Config("ours, bf16 + remainder, 4-bit states, step in backward", "ours", BF16,
           {"master_weights": "remainder", "state_dtype": "4bit", "step_in_backward": True}, "remainder+4bit"),
    Config("torchao AdamW4bit, fp32", "torchao", torch.float32, needs="4bit", cls="AdamW4bit"),
    Config("torchao AdamW4bit, bf16 params", "torchao", BF16, needs="4bit", cls="AdamW4bit"),
    Config("torchao AdamW8bit, fp32", "torchao", torch.float32, needs="8bit"),
    Config("torchao AdamW8bit, bf16 params", "torchao", BF16, needs="8bit"),
    Config("bitsandbytes AdamW8bit, fp32", "bnb", torch.float32, needs="8bit"),
    Config("bitsandbytes AdamW8bit, bf16 params", "bnb", BF16, needs="8bit"),
)


# what a row's option must leave in opt.state, else the option was accepted and did nothing
# (an option accepted and ignored, such as master_weights="remainder" read as True, must fail its row)
NEEDS = {
    "remainder": ("master remainder", lambda ledger, numel: ledger.bytes["remainder"] > 0),
    "8bit": ("1-byte moment tensor", lambda ledger, numel: 1 in ledger.state_itemsizes),
    # two moments of half a byte an element (with amsgrad three): under 1.6 bytes an element
    "4bit": ("4-bit moment codes", lambda ledger, numel: 1 in ledger.state_itemsizes
             and ledger.bytes["states"] < 1.6 * numel),
}


def check_needs(config: Config, ledger: Ledger, opt, params) -> None:
    for need in filter(None, (config.needs or "").split("+")):
        what, holds = NEEDS[need]
        if not holds(ledger, sum(p.numel() for p in params)):
            keys = sorted({str(k) for p in params for k in opt.state.get(p, {})})
            given = ", ".join(f"{k}={v!r}" for k, v in config.options.items()) or config.impl
            raise RuntimeError(f"{given} had no effect: opt.state holds {', '.join(keys)}; no {what}")


def optional(impl: str) -> types.ModuleType:
    module, pin = ANCHORS[impl]
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"{module.split('.')[0]} is not installed ({e}); it is an optional extra: "
                          f"pip install 'adamw-tau[{EXTRA}]' (pins {pin})") from e


def build(config: Config, params):
    if config.impl == "torch":
        return torch.optim.AdamW(params, lr=1e-3, **config.options)
    if config.impl == "ours":
        return AdamWTau(params, lr=1e-3, tau_iters=1000.0, **config.options)
    return getattr(optional(config.impl), config.cls)(params, lr=1e-3, **config.options)


@dataclass
class MemoryRow:
    config: str
    numel: int
    bytes: dict = field(default_factory=dict)  # category -> bytes; empty when the row failed
    seconds: float | None = None  # building, one step and counting
    step_ms: float | None = None  # median step() after the counted one (timing.time_ms), beside the bytes
    peak: dict = field(default_factory=dict)  # category -> bytes at the peak of a training step (peak.py)
    cuda_peak: int | None = None  # on a GPU: torch.cuda.max_memory_allocated over that step (peak.py)
    note: str = ""
    error: str | None = None  # why this row has no numbers

    @property
    def total(self) -> int:
        return sum(self.bytes.values())

    @property
    def peak_total(self) -> int:
        return sum(self.peak.values())

    def per_param(self) -> dict:
        out = {k: v / self.numel for k, v in self.bytes.items()}
        return {**out, "total": self.total / self.numel} if out else {}


def measure(config: Config, shapes, device: str = "cpu") -> MemoryRow:
    """One configuration, built, stepped once, counted and freed; never raises."""
    row = MemoryRow(config.name, sum(math.prod(s) for s in shapes))
    start = time.perf_counter()
    params = opt = None
    try:
        params = make_params(shapes, Path(config.name, config.param_dtype), device)
        opt = build(config, params)
        opt.step()
        ledger = count(params, opt)
        check_needs(config, ledger, opt, params)
        row.bytes = ledger.bytes
        # the step's time beside its bytes (the 8-bit anchors' first steps compile or build
        # tables, so one warm-up step); counted first, so later steps change no count. A step
        # inside backward has no step() to time (it is a no-op there: it printed 0.0 ms): "-"
        if not config.options.get("step_in_backward"):
            row.step_ms = time_ms(opt.step, device, reps=3, warmup=1)
        if config.impl in ANCHORS:
            top = ANCHORS[config.impl][0].split(".")[0]
            row.note = f"{top} {importlib.import_module(top).__version__}"
        params = opt = None
        # the peak, on fresh params and a fresh optimizer that train by a real backward
        params = make_params(shapes, Path(config.name, config.param_dtype), device)
        for p in params:
            p.grad = None
        opt = build(config, params)
        ledger, row.cuda_peak = peak_of_a_training_step(params, opt)
        row.peak = ledger.bytes
    except Exception as e:  # one failing configuration never takes the table down
        row.error = why(e)
    finally:
        params = opt = None
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()
    row.seconds = time.perf_counter() - start
    return row


def quick_shapes() -> list[tuple]:
    """GPT-2's layout at width 64 and one layer: matrices of 4096+ elements (the 8-bit anchors
    quantize those) beside vectors under 4096 (they keep fp32)."""
    return gpt2_shapes(d=64, vocab=256, ctx=64, layers=1)


@dataclass
class MemoryReport:
    workload: str
    tensors: int
    numel: int
    device: str
    torch_version: str
    rows: list = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict:
        rows = [{**asdict(r), "total": r.total, "per_param": r.per_param(),
                 "peak_per_param": r.peak_total / r.numel if r.peak else None} for r in self.rows]
        return {**{k: v for k, v in asdict(self).items() if k != "rows"}, "rows": rows}


def run(quick: bool = False, device: str = "cpu", configs=None, progress: bool = True) -> MemoryReport:
    workload, shapes = ("gpt2_quick", quick_shapes()) if quick else ("gpt2_124m", gpt2_124m_shapes())
    report = MemoryReport(workload, len(shapes), sum(math.prod(s) for s in shapes), device, torch.__version__)
    start = time.perf_counter()
    for config in CONFIGS if configs is None else configs:
        row = measure(config, shapes, device)
        report.rows.append(row)
        if progress:
            print(f"  memory: {config.name}: {row.seconds:.1f} s" + (" (not available)" if row.error else ""),
                  flush=True)
    report.seconds = time.perf_counter() - start
    return report


def format_table(report: MemoryReport) -> str:
    """A markdown table: bytes per parameter by category ("-" where none), and each row's note."""
    head = (f"bytes per parameter after one step, counted from the tensors held (unique storages); the peak: "
            f"the most bytes per parameter alive during a training step's backward and step, counted the same way "
            f"(activations not counted; `cuda peak`: max_memory_allocated over that step, activations included); "
            f"the median of 3 later steps' time (ms), "
            f"{report.workload}: {report.tensors} tensors, {report.numel:,} parameters, {report.device}, "
            f"torch {report.torch_version}; {report.seconds:.0f} s\n\n")
    cuda = report.device == "cuda"
    cols = ["configuration", *CATEGORIES, "total", "peak", *(["cuda peak"] if cuda else []), "ms/step", "note"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in report.rows:
        if r.error:
            cells = ["n/a"] * (len(cols) - 2) + [f"not available: {r.error}"]
        else:
            per = r.per_param()
            cells = [f"{per[c]:.2f}" if r.bytes[c] else "-" for c in CATEGORIES] + [
                f"**{per['total']:.2f}**", f"**{r.peak_total / r.numel:.2f}**",
                *([f"{r.cuda_peak / r.numel:.2f}"] if cuda else []),
                f"{r.step_ms:.1f}" if r.step_ms is not None else "-", r.note]
        lines.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in [r.config, *cells]) + " |")
    return head + "\n".join(lines)
