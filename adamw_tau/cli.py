"""The ``adamw-tau`` command: bench (the main job), convert, transfer, published, sweep."""
from __future__ import annotations

import argparse
import json
import sys

from .core import timescale


def _memory(args) -> int:
    from .bench import memory
    clash = [flag for flag, given in (("--plot", args.plot), ("--workload", args.workload), ("--path", args.path),
                                      ("--host-only", args.host_only)) if given]
    if clash:
        raise SystemExit(f"adamw-tau bench --memory: {', '.join(clash)} do not apply to the memory table "
                         "(it takes --quick, --json, --device and --no-progress)")
    report = memory.run(quick=args.quick, device=args.device or "cpu", progress=not args.no_progress)
    print(memory.format_table(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report.as_dict(), f, indent=2)
        print(f"wrote {args.json}")
    return 0  # a row that could not be measured says why in the table; it is not a failure of the table


def _bench(args) -> int:
    if args.memory:
        return _memory(args)
    from .bench import bandwidth, host_cost, workloads
    report = bandwidth.run(device=args.device, quick=args.quick, progress=not args.no_progress,
                       only_workloads=args.workload, only_paths=args.path, host_only=args.host_only)
    if report.rows:
        print(bandwidth.format_table(report))
        left_out = [p for p in workloads.BENCH_PATHS if p not in workloads.default_paths(report.device)]
        if left_out and not args.path:
            print(f"(left out on {report.device} by default, slow there: {', '.join(left_out)}; "
                  f"add --path {' --path '.join(left_out)} to run them)")
    print("\n" + host_cost.format_host_table(report.host_cost))
    print("\n" + host_cost.format_client_table(report.client))
    if report.clip:
        from .bench import clipping
        print("\n" + clipping.format_clip_table(report.clip))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report.as_dict(), f, indent=2)
        print(f"wrote {args.json}")
    if args.plot and report.rows:
        bandwidth.plot(report, args.plot)
        print(f"wrote {args.plot}")
    status = 0
    if report.failures:
        print("\nFAILED: these rows could not be measured (the rest of the table stands):", file=sys.stderr)
        for line in report.failures:
            print(f"  {line}", file=sys.stderr)
        status = 1
    if report.parity_failures:
        print("\nPARITY FAILED: a backend's bits differ from the reference:", file=sys.stderr)
        for line in report.parity_failures:
            print(f"  {line}", file=sys.stderr)
        status = 1
    return status


def convert(lr: float, weight_decay: float | None = None, tau_iters: float | None = None,
            tau_epochs: float | None = None, iters_per_epoch: float | None = None) -> dict:
    """λ ⇄ τ_iter ⇄ τ_epoch; exactly one of weight_decay, tau_iters, tau_epochs."""
    given = [k for k, v in (("--weight-decay", weight_decay), ("--tau-iters", tau_iters),
                            ("--tau-epochs", tau_epochs)) if v is not None]
    if len(given) != 1:
        raise ValueError(f"give exactly one of --weight-decay, --tau-iters, --tau-epochs (got {given or 'none'})")
    if tau_epochs is not None:
        if iters_per_epoch is None:
            raise ValueError("--tau-epochs needs --dataset-size and --batch-size (or --iters-per-epoch)")
        tau_iters = timescale.tau_iter_from_tau_epoch(tau_epochs, iters_per_epoch)
    if weight_decay is not None:
        tau_iters = timescale.tau_iter_from_lambda(lr, weight_decay)
    else:
        weight_decay = timescale.lambda_from_tau_iter(lr, tau_iters)
    out = {"lr": lr, "weight_decay": weight_decay, "tau_iters": tau_iters, "iters_per_epoch": iters_per_epoch,
           "tau_epochs": (timescale.tau_epoch_from_tau_iter(tau_iters, iters_per_epoch) if iters_per_epoch else None)}
    return out


def _convert(args) -> int:
    m = args.iters_per_epoch
    if m is None and (args.dataset_size is not None or args.batch_size is not None):
        if args.dataset_size is None or args.batch_size is None:
            raise SystemExit("adamw-tau convert: --dataset-size and --batch-size go together")
        m = timescale.iters_per_epoch(args.dataset_size, args.batch_size)
    try:
        r = convert(args.lr, args.weight_decay, args.tau_iters, args.tau_epochs, m)
    except (ValueError, TypeError) as e:
        raise SystemExit(f"adamw-tau convert: {e}")
    print(f"lr (peak)        η       = {r['lr']:.6g}")
    if m is not None:
        print(f"iters per epoch  M       = dataset / batch = {m:.6g}")
    print(f"weight decay     λ       = 1 / (η·τ_iter)  = {r['weight_decay']:.6g}")
    print(f"timescale        τ_iter  = 1 / (η·λ)       = {r['tau_iters']:.6g} iterations")
    if r["tau_epochs"] is not None:
        print(f"timescale        τ_epoch = τ_iter / M      = {r['tau_epochs']:.6g} epochs")
    print(f"per-step decay   1 − η·λ = 1 − 1/τ_iter    = {1 - 1 / r['tau_iters']:.10g} at peak lr")
    if args.json:
        print(json.dumps(r))
    return 0


def _transfer(args) -> int:
    from .scaling.transfer import transfer
    try:
        r = transfer(args.lr, weight_decay=args.weight_decay, tau_epochs=args.tau_epochs,
                               dataset_size=args.dataset_size, batch_size=args.batch_size,
                               to_dataset_size=args.to_dataset_size, to_batch_size=args.to_batch_size,
                               width_mult=args.width_mult)
    except (ValueError, TypeError) as e:
        raise SystemExit(f"adamw-tau transfer: {e}")
    a, b = r["from"], r["to"]
    print("tuned run")
    print(f"  lr (peak)        η        = {a['lr']:.6g}")
    print(f"  iters per epoch  M        = dataset / batch = {a['dataset_size']:.6g} / {a['batch_size']:.6g}"
          f" = {a['iters_per_epoch']:.6g}")
    print(f"  weight decay     λ        = {a['weight_decay']:.6g}")
    print(f"  timescale        τ_iter   = 1 / (η·λ)        = {a['tau_iters']:.6g} iterations")
    print(f"  timescale        τ_epoch  = τ_iter / M       = {a['tau_epochs']:.6g} epochs   (held fixed)")
    print(f"target (width_mult {b['width_mult']:g} under μP)")
    print(f"  iters per epoch  M'       = {b['dataset_size']:.6g} / {b['batch_size']:.6g} = {b['iters_per_epoch']:.6g}")
    print(f"  timescale        τ_iter'  = τ_epoch · M'     = {b['tau_iters']:.6g} iterations")
    print("  per group kind (mup_param_groups): λ' = 1 / (η'·τ_iter')")
    for kind, g in r["groups"].items():
        print(f"    {kind:7s} η' = {g['lr_rule']:15s} = {g['lr']:<10.6g} λ' = {g['weight_decay']:.6g}")
    print("  (vector-like groups are not decayed by mup_param_groups by default; their λ' is for when they are)")
    if args.json:
        print(json.dumps(r))
    return 0


def _published(args) -> int:
    from .scaling import published
    if args.json:
        print(json.dumps(published.rows()))
    else:
        print(published.markdown())
    return 0


def _sweep(args) -> int:
    from .experiments import commands
    return commands.main(args)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="adamw-tau", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    b = sub.add_parser("bench", help="speed and bitwise parity, side by side with torch.optim.AdamW")
    b.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda if present, else cpu")
    b.add_argument("--quick", action="store_true", help="fewer repetitions and smaller workloads")
    b.add_argument("--json", metavar="FILE", help="write the rows as JSON")
    b.add_argument("--plot", metavar="PNG", help="write %% of copy bandwidth per backend as a PNG")
    b.add_argument("--workload", action="append", help="only this workload (repeatable)")
    b.add_argument("--path", action="append", help="only this dtype path (repeatable)")
    b.add_argument("--no-progress", action="store_true")
    b.add_argument("--host-only", action="store_true",
                   help="only the host-cost table (step() on tiny tensors, the device idle)")
    b.add_argument("--memory", action="store_true",
                   help="only the memory table: bytes per parameter each optimizer configuration holds after a "
                        "step, GPT-2-124M shapes (--quick: small shapes), on the CPU unless --device says otherwise")
    b.set_defaults(func=_bench)
    c = sub.add_parser("convert", help="λ ⇄ τ_iter ⇄ τ_epoch")
    c.add_argument("--lr", type=float, required=True, help="peak learning rate η")
    c.add_argument("--weight-decay", type=float, help="torch-form λ")
    c.add_argument("--tau-iters", type=float)
    c.add_argument("--tau-epochs", type=float)
    c.add_argument("--dataset-size", type=float, help="examples (or tokens)")
    c.add_argument("--batch-size", type=float, help="examples (or tokens) per step")
    c.add_argument("--iters-per-epoch", type=float)
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=_convert)
    t = sub.add_parser("transfer", help="move a tuned lr and λ to another dataset size, batch size and μP width "
                                        "(τ_epoch held fixed)")
    t.add_argument("--lr", type=float, required=True, help="the tuned run's peak learning rate η")
    t.add_argument("--weight-decay", type=float, help="the tuned run's torch-form λ (or give --tau-epochs)")
    t.add_argument("--tau-epochs", type=float, help="the tuned run's τ_epoch (or give --weight-decay)")
    t.add_argument("--dataset-size", type=float, required=True, help="the tuned run's examples (or tokens)")
    t.add_argument("--batch-size", type=float, required=True, help="the tuned run's examples (or tokens) per step")
    t.add_argument("--to-dataset-size", type=float, required=True, help="the target's dataset size, same unit")
    t.add_argument("--to-batch-size", type=float, help="the target's batch size (default: unchanged)")
    t.add_argument("--width-mult", type=float, default=1.0, help="target width / tuned width under μP (default 1)")
    t.add_argument("--json", action="store_true")
    t.set_defaults(func=_transfer)
    pb = sub.add_parser("published", help="public pretraining runs' lr, λ, batch and tokens in τ terms, with sources")
    pb.add_argument("--json", action="store_true")
    pb.set_defaults(func=_published)
    try:
        from .experiments.commands import add_parser
        add_parser(sub, _sweep)
    except ImportError:
        pass
    return ap


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
