"""The benchmark: one workload definition for ``adamw-tau bench`` and bench/'s pytest-benchmark suite.

Every row times ``optimizer.step()`` (host work included) of one implementation on one
workload and dtype path, beside a device-to-device copy of the same number of bytes
measured in the same run: % of copy = copy time / step time. Bytes are counted as the
fewest a one-pass step must move: each tensor the step reads, read once; each it writes,
written once. The parity column runs each of our backends against the reference.
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass, field

import torch

from . import AdamWTau, backends
from .testing import PATHS, Path, parity_bits

# --- workloads -----------------------------------------------------------------------------


def gpt2_shapes(d: int, vocab: int, ctx: int, layers: int) -> list[tuple]:
    """GPT-2's parameters in transformers' order (Conv1D weights stored (in, out))."""
    shapes = [(vocab, d), (ctx, d)]
    for _ in range(layers):
        shapes += [(d,), (d,), (d, 3 * d), (3 * d,), (d, d), (d,), (d,), (d,), (d, 4 * d), (4 * d,), (4 * d, d), (d,)]
    return shapes + [(d,), (d,)]


def gpt2_124m_shapes() -> list[tuple]:
    return gpt2_shapes(d=768, vocab=50257, ctx=1024, layers=12)


def llama_1b_shapes() -> list[tuple]:
    d, ff, kv, v, layers = 2048, 8192, 512, 128256, 16
    shapes = [(v, d)]
    for _ in range(layers):
        shapes += [(d, d), (kv, d), (kv, d), (d, d), (ff, d), (ff, d), (d, ff), (d,), (d,)]
    return shapes + [(d,)]


def workloads(device: str, quick: bool) -> dict[str, list[tuple]]:
    if device == "cuda":
        w = {"one_large_268M": [(2 ** 28,)], "gpt2_124m": gpt2_124m_shapes(), "llama_1b": llama_1b_shapes(),
             "small_2000x4096": [(4096,)] * 2000}
        if quick:
            w.pop("llama_1b")
        return w
    w = {"one_large_16M": [(2 ** 24,)], "gpt2_124m": gpt2_124m_shapes(), "small_2000x4096": [(4096,)] * 2000}
    if quick:
        w = {"one_large_4M": [(2 ** 22,)], "gpt2_124m": gpt2_124m_shapes(), "small_2000x4096": [(4096,)] * 2000}
    return w


BENCH_PATHS = ("fp32", "bf16_master", "bf16_states")


def bytes_per_element(path: Path, amsgrad: bool = False) -> int:
    p = path.param_dtype.itemsize
    s = path.state_dtype.itemsize
    n = p + p  # grad read + param written
    n += 2 * 4 if path.master else p  # master read and written, or param read
    n += 2 * 2 * s + (2 * s if amsgrad else 0)
    return n


# --- measurement ---------------------------------------------------------------------------


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_ms(fn, device: str, reps: int, warmup: int, budget_s: float | None = None) -> float:
    """Median milliseconds of fn(): CUDA events on GPU, perf_counter on CPU. With
    ``budget_s``, stop after that many seconds once 3 calls are timed."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    start = time.perf_counter()
    for _ in range(reps):
        if budget_s is not None and len(times) >= 3 and time.perf_counter() - start > budget_s:
            break
        if device == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def time_stream_ms(fn, device: str, steps: int = 10, reps: int = 5) -> float:
    """Median milliseconds per call of ``steps`` calls issued back to back, as a training loop
    issues them: on a GPU the host's work for one step overlaps the kernels of the one
    before, so this is the device's time per step once the host keeps ahead. ``time_ms``
    times single calls from an idle device, host work included."""
    fn()
    _sync(device)
    per_step = []
    for _ in range(reps):
        if device == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            for _ in range(steps):
                fn()
            b.record()
            b.synchronize()
            per_step.append(a.elapsed_time(b) / steps)
        else:
            t0 = time.perf_counter()
            for _ in range(steps):
                fn()
            per_step.append((time.perf_counter() - t0) * 1e3 / steps)
    return statistics.median(per_step)


def copy_ms(nbytes: int, device: str, reps: int, warmup: int) -> float:
    """The roofline for moving nbytes: on a GPU a device-to-device copy (reads nbytes/2,
    writes nbytes/2); on the CPU an in-place stream (x *= c over nbytes/2, read and written
    back), the access pattern of the update itself. A CPU copy_ reads one buffer and writes
    another, which the CPU's caches and write-allocate make slower than an in-place update:
    the update measured at 150% of "copy" on the 2-core machine (RESULTS.md), a ceiling it
    cannot exceed is the honest one (bench/cpu_stream.cpp measures the same)."""
    n = max(1, nbytes // 2 // 4)
    src = torch.rand(n, device=device)
    if device != "cuda":
        return time_ms(lambda: src.mul_(1.0), device, reps, warmup)
    dst = torch.empty_like(src)
    return time_ms(lambda: dst.copy_(src), device, reps, warmup)


def roofline_name(device: str) -> str:
    return "% copy" if device == "cuda" else "% stream"


def _model(shapes, path: Path, device: str, seed: int = 0):
    gen = torch.Generator(device=device).manual_seed(seed)
    params = []
    for s in shapes:
        p = torch.randn(s, device=device, generator=gen).to(path.param_dtype).requires_grad_()
        p.grad = (torch.randn(s, device=device, generator=gen) * 1e-2).to(path.param_dtype)
        params.append(p)
    return params


def make_optimizer(impl: str, params, path: Path):
    """impl: 'ours:<backend>' or 'torch:<for-loop|foreach|fused>'."""
    kind, name = impl.split(":")
    if kind == "ours":
        return AdamWTau(params, lr=1e-3, tau_iters=1000.0, backend=name, master_weights=path.master,
                        state_dtype=path.state_dtype)
    flags = {"for-loop": dict(foreach=False), "foreach": dict(foreach=True), "fused": dict(fused=True)}[name]
    return torch.optim.AdamW(params, lr=1e-3, weight_decay=1.0, **flags)


def torch_supports(path: Path) -> bool:
    """torch.optim.AdamW keeps states in the param's dtype and has no master weights."""
    return not path.master and path.state_dtype == path.param_dtype


@dataclass
class Row:
    workload: str
    path: str
    impl: str
    tensors: int
    numel: int
    bytes: int
    ms: float | None = None
    copy_ms: float | None = None
    gbps: float | None = None
    pct_copy: float | None = None
    speedup_vs_torch_fused: float | None = None
    ms_stream: float | None = None  # per step, steps back to back (GPU): the host runs ahead
    pct_copy_stream: float | None = None
    parity_bits: int | None = None
    note: str = ""
    error: str | None = None  # why this implementation could not be measured


@dataclass
class Report:
    device: str
    device_name: str
    torch_version: str
    rows: list = field(default_factory=list)
    parity_failures: list = field(default_factory=list)
    failures: list = field(default_factory=list)  # rows that raised: "impl workload path: why"
    host_cost: list = field(default_factory=list)  # bench_host.HostRow
    client: list = field(default_factory=list)  # bench_host.ClientRow

    def as_dict(self) -> dict:
        return {"device": self.device, "device_name": self.device_name, "torch": self.torch_version,
                "rows": [asdict(r) for r in self.rows], "parity_failures": self.parity_failures,
                "failures": self.failures, "host_cost": [asdict(r) for r in self.host_cost],
                "client": [asdict(r) for r in self.client]}


def _why(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0] if lines else ''}"[:200]


def our_backends(device: str) -> list[str]:
    names = ["triton", "cuda"] if device == "cuda" else ["cpu"]
    return [n for n in names if backends.availability(n, torch.device(device)) is None]


def parity_sizes(shapes) -> list[int]:
    """The workload's tensor sizes capped (64 tensors, 65,537 elements each) so the float64
    reference stays quick; odd sizes kept, since tails are where kernels go wrong."""
    return [min(math.prod(s), 65_537) for s in shapes[:64]]


def run(device: str | None = None, quick: bool = False, progress: bool = True, parity_steps: int = 3,
        only_workloads=None, only_paths=None, host_only: bool = False) -> Report:
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    # the CPU default ends in about 2 minutes on 2 cores (the for-loop rows alone took minutes)
    reps, warmup = (5, 2) if quick else ((20, 3) if device == "cuda" else (7, 1))
    name = torch.cuda.get_device_name() if device == "cuda" else (_cpu_name() or "CPU")
    report = Report(device, name, torch.__version__)
    ours = our_backends(device)
    impls = [f"ours:{b}" for b in ours] + (["torch:for-loop"] if device == "cuda" else []) + \
        ["torch:foreach", "torch:fused"]
    from .bench_host import client_cost, host_cost
    report.host_cost = host_cost(device, [i for i in impls if i != "torch:for-loop"],
                                 reps=20 if quick else 50)
    report.client = client_cost(device, [i for i in impls if i != "torch:for-loop"], reps=20 if quick else 50)
    wl = {} if host_only else workloads(device, quick)
    if only_workloads:
        wl = {k: v for k, v in wl.items() if k in only_workloads}
    paths = [p for p in BENCH_PATHS if not only_paths or p in only_paths]
    jobs = [(w, p, i) for w in wl for p in paths for i in impls]
    bar = _progress(len(jobs) + len(wl) * len(paths) * len(ours), progress)
    for wname, shapes in wl.items():
        numel = sum(math.prod(s) for s in shapes)
        for pname in paths:
            path = PATHS[pname]
            nbytes = numel * bytes_per_element(path)
            cms = copy_ms(nbytes, device, reps, warmup)
            rows = {}
            for impl in impls:
                row = Row(wname, pname, impl, len(shapes), numel, nbytes, copy_ms=cms)
                if impl.startswith("torch") and not torch_supports(path):
                    row.note = "torch.optim.AdamW has no such path"
                else:
                    try:
                        params = _model(shapes, path, device)
                        opt = make_optimizer(impl, params, path)
                        # on the CPU a row gets about a second: the default bench stays near a minute
                        # (the for-loop and foreach GPT-2 rows alone took minutes at 7 reps)
                        row.ms = time_ms(opt.step, device, reps, warmup, None if device == "cuda" else 1.0)
                        row.gbps = nbytes / row.ms / 1e6
                        row.pct_copy = 100.0 * cms / row.ms
                        if device == "cuda":  # on the CPU a step is synchronous: the same figure
                            row.ms_stream = time_stream_ms(opt.step, device, reps=3 if quick else 5)
                            row.pct_copy_stream = 100.0 * cms / row.ms_stream
                    except Exception as e:  # one failing backend never takes the bench down
                        row.error = _why(e)
                        report.failures.append(f"{impl} {wname} {pname}: {row.error}")
                    params = opt = None
                    if device == "cuda":
                        torch.cuda.empty_cache()
                rows[impl] = row
                bar.update(1)
            fused = rows["torch:fused"].ms
            for impl, row in rows.items():
                if row.ms and fused:
                    row.speedup_vs_torch_fused = fused / row.ms
                if impl.startswith("ours:"):
                    if row.error is None:
                        try:
                            row.parity_bits = parity_bits(impl.split(":")[1], path, parity_sizes(shapes),
                                                          steps=parity_steps, device=device, amsgrad=False)
                        except Exception as e:
                            row.error = _why(e)
                            report.failures.append(f"{impl} {wname} {pname} (parity): {row.error}")
                    if row.parity_bits:
                        report.parity_failures.append(f"{impl} {wname} {pname}: {row.parity_bits} words differ")
                    bar.update(1)
            report.rows.extend(rows.values())
    bar.close()
    return report


def _cpu_name() -> str | None:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


class _NoBar:
    def update(self, n):
        pass

    def close(self):
        pass


def _progress(total: int, enabled: bool):
    if not enabled:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=total, desc="adamw-tau bench", unit="run", leave=False)


def format_table(report: Report) -> str:
    head = (f"device: {report.device_name} ({report.device}), torch {report.torch_version}\n"
            f"ms = median time of one step() from an idle device, host work included; "
            f"{roofline_name(report.device)} = "
            f"{'a copy' if report.device == 'cuda' else 'an in-place stream'} of the same bytes / step time; "
            + ("b2b = per step, 10 steps issued back to back (the host's work overlaps the kernels); "
               if any(r.ms_stream for r in report.rows) else "") +
            "parity = words differing from the reference (0 required)\n")
    stream = any(r.ms_stream for r in report.rows)
    cols = ["workload", "path", "impl", "B/param", "ms", "GB/s", roofline_name(report.device), "x torch fused"] + \
        (["ms b2b", "% copy b2b"] if stream else []) + ["parity"]
    lines = [cols]
    for r in report.rows:
        bpp = r.bytes // r.numel
        lines.append([r.workload, r.path, r.impl, str(bpp),
                      f"{r.ms:.3f}" if r.ms else "-", f"{r.gbps:.1f}" if r.gbps else "-",
                      f"{r.pct_copy:.1f}" if r.pct_copy else "-",
                      f"{r.speedup_vs_torch_fused:.2f}" if r.speedup_vs_torch_fused else "-"] +
                     ([f"{r.ms_stream:.3f}" if r.ms_stream else "-",
                       f"{r.pct_copy_stream:.1f}" if r.pct_copy_stream else "-"] if stream else []) +
                     ["-" if r.parity_bits is None else str(r.parity_bits)] + ([f"FAILED: {r.error}"] if r.error else []))
    widths = [max(len(line[i]) for line in lines) for i in range(len(cols))]
    out = [head]
    for j, line in enumerate(lines):
        out.append("  ".join(c.ljust(w) for c, w in zip(line, widths)) + "".join("  " + x for x in line[len(cols):]))
        if j == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def plot(report: Report, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({(r.workload, r.path) for r in report.rows}, key=lambda x: (x[0], x[1]))
    impls = list(dict.fromkeys(r.impl for r in report.rows))
    fig, ax = plt.subplots(figsize=(max(8, 1.3 * len(groups)), 4.5))
    width = 0.8 / len(impls)
    for k, impl in enumerate(impls):
        vals = []
        for g in groups:
            row = next((r for r in report.rows if (r.workload, r.path) == g and r.impl == impl), None)
            vals.append(row.pct_copy if row and row.pct_copy else 0.0)
        ax.bar([i + k * width for i in range(len(groups))], vals, width, label=impl)
    ax.axhline(100, color="k", lw=0.8, ls="--")
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(groups))])
    ax.set_xticklabels([f"{w}\n{p}" for w, p in groups], fontsize=7)
    ax.set_ylabel(f"{roofline_name(report.device)} bandwidth (same bytes)")
    ax.set_title(f"AdamW step vs copy roofline — {report.device_name}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
