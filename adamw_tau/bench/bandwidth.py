"""The benchmark: one workload definition for ``adamw-tau bench`` and bench/'s pytest-benchmark suite.

Every row times ``optimizer.step()`` (host work included) of one implementation on one
workload and dtype path, beside a device-to-device copy of the same number of bytes
measured in the same run: % of copy = copy time / step time. On the CPU the roofline is the
ceiling of ceiling.py instead ([note: the CPU ceiling]): the step's own bytes moved its way in one pass
on the step's threads, each buffer read-written, read or written as the step does:
% ceiling = ceiling time / step time. Bytes are counted as
the fewest a one-pass step must move, from the path's formats for each tensor
(ceiling.path_streams: small tensors keep fp32 states on a quantized path): each tensor the step
reads, read once; each it writes, written once. The parity column runs each of our backends
against the reference.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch

from ..testing.parity import PATHS, parity_bits
from .ceiling import ceiling_ms, path_streams
from .clipping import CLIP_WORKLOADS, clip_rows
from .host_cost import client_cost, host_cost
from .timing import copy_ms, cpu_name, roofline_name, time_ms, time_stream_ms, why
from .workloads import (
    BENCH_PATHS,
    default_paths,
    make_optimizer,
    make_params,
    our_backends,
    parity_sizes,
    torch_supports,
    workloads,
)


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
    host_cost: list = field(default_factory=list)  # host_cost.HostRow
    client: list = field(default_factory=list)  # host_cost.ClientRow
    clip: list = field(default_factory=list)  # clipping.ClipRow

    def as_dict(self) -> dict:
        return {"device": self.device, "device_name": self.device_name, "torch": self.torch_version,
                "rows": [asdict(r) for r in self.rows], "parity_failures": self.parity_failures,
                "failures": self.failures, "host_cost": [asdict(r) for r in self.host_cost],
                "client": [asdict(r) for r in self.client], "clip": [asdict(r) for r in self.clip]}


def run(device: str | None = None, quick: bool = False, progress: bool = True, parity_steps: int = 3,
        only_workloads=None, only_paths=None, host_only: bool = False) -> Report:
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    # the CPU default ends in about 2 minutes on 2 cores (the for-loop rows alone took minutes)
    reps, warmup = (5, 2) if quick else ((20, 3) if device == "cuda" else (7, 1))
    name = torch.cuda.get_device_name() if device == "cuda" else (cpu_name() or "CPU")
    report = Report(device, name, torch.__version__)
    ours = our_backends(device)
    impls = [f"ours:{b}" for b in ours] + (["torch:for-loop"] if device == "cuda" else []) + \
        ["torch:foreach", "torch:fused"]
    report.host_cost = host_cost(device, [i for i in impls if i != "torch:for-loop"],
                                 reps=20 if quick else 50)
    report.client = client_cost(device, [i for i in impls if i != "torch:for-loop"], reps=20 if quick else 50)
    wl = {} if host_only else workloads(device, quick)
    if only_workloads:
        wl = {k: v for k, v in wl.items() if k in only_workloads}
    paths = [p for p in (BENCH_PATHS if only_paths else default_paths(device)) if not only_paths or p in only_paths]
    jobs = [(w, p, i) for w in wl for p in paths for i in impls]
    bar = _progress(len(jobs) + len(wl) * len(paths) * len(ours), progress)
    for wname, shapes in wl.items():
        numel = sum(math.prod(s) for s in shapes)
        for pname in paths:
            path = PATHS[pname]
            streams = path_streams(path, shapes)
            nbytes = streams.moved
            # the roofline: a device copy of the bytes on a GPU, the step's own streams on the CPU
            cms = copy_ms(nbytes, device, reps, warmup) if device == "cuda" else ceiling_ms(streams, numel, reps, warmup)
            rows = {}
            for impl in impls:
                row = Row(wname, pname, impl, len(shapes), numel, nbytes, copy_ms=cms)
                if impl.startswith("torch") and not torch_supports(path):
                    row.note = "torch.optim.AdamW has no such path"
                else:
                    try:
                        params = make_params(shapes, path, device)
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
                        row.error = why(e)
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
                            row.error = why(e)
                            report.failures.append(f"{impl} {wname} {pname} (parity): {row.error}")
                    if row.parity_bits:
                        report.parity_failures.append(f"{impl} {wname} {pname}: {row.parity_bits} words differ")
                    bar.update(1)
            report.rows.extend(rows.values())
    if not host_only:
        chosen = [w for w in CLIP_WORKLOADS if not only_workloads or w in only_workloads]
        report.clip = clip_rows(device, [f"ours:{b}" for b in ours], quick, chosen)
        report.failures += [f"{r.impl} {r.workload} (clip): {r.error}" for r in report.clip if r.error]
    bar.close()
    return report


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
            + ("a copy of the same bytes / step time; " if report.device == "cuda" else
               "one pass over the row's own bytes shaped like the step (each buffer read and written back, read "
               "or written as the step does, on its threads) / step time; ") +
            ("b2b = per step, 10 steps issued back to back (the host's work overlaps the kernels); "
               if any(r.ms_stream for r in report.rows) else "") +
            "parity = words differing from the reference (0 required)\n")
    stream = any(r.ms_stream for r in report.rows)
    cols = ["workload", "path", "impl", "B/param", "ms", "GB/s", roofline_name(report.device), "x torch fused"] + \
        (["ms b2b", "% copy b2b"] if stream else []) + ["parity"]
    lines = [cols]
    for r in report.rows:
        bpp = r.bytes / r.numel
        lines.append([r.workload, r.path, r.impl, f"{bpp:.4g}",
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
