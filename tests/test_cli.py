"""`adamw-tau convert` against hand-computed values; `adamw-tau bench` parity column and exit code."""
import json
import math
import time

import pytest
import torch

from adamw_tau import cli
from adamw_tau.bench import bandwidth, host_cost, timing, workloads
from adamw_tau.launch import ops


def test_convert_llama2_like_setting(capsys):
    # lr 3e-4, λ 0.1: τ_iter = 1/(3e-4·0.1) = 33333.3; M = 2e12/4e6 = 5e5; τ_epoch = 0.0666…
    assert cli.main(["convert", "--lr", "3e-4", "--weight-decay", "0.1", "--dataset-size", "2e12",
                     "--batch-size", "4e6", "--json"]) == 0
    out = capsys.readouterr().out
    r = json.loads(out.strip().splitlines()[-1])
    assert math.isclose(r["tau_iters"], 100000 / 3)
    assert r["iters_per_epoch"] == 500000.0
    assert math.isclose(r["tau_epochs"], 1 / 15)
    assert "τ_iter  = 1 / (η·λ)" in out


def test_convert_reverse_from_tau_epochs():
    r = cli.convert(lr=3e-4, tau_epochs=1 / 15, iters_per_epoch=5e5)
    assert math.isclose(r["weight_decay"], 0.1)
    r = cli.convert(lr=1e-3, tau_iters=2000.0)
    assert math.isclose(r["weight_decay"], 0.5) and r["tau_epochs"] is None


def test_convert_bad_input():
    with pytest.raises(ValueError, match="exactly one"):
        cli.convert(lr=1e-3, weight_decay=0.1, tau_iters=10.0)
    with pytest.raises(ValueError, match="dataset-size"):
        cli.convert(lr=1e-3, tau_epochs=2.0)
    with pytest.raises(SystemExit):
        cli.main(["convert", "--lr", "-1", "--weight-decay", "0.1"])


def test_bytes_per_element_matches_the_issue():
    from adamw_tau.testing.parity import PATHS
    assert workloads.bytes_per_element(PATHS["fp32"]) == 28
    assert workloads.bytes_per_element(PATHS["bf16_master"]) == 28
    assert workloads.bytes_per_element(PATHS["bf16_states"]) == 14
    assert workloads.bytes_per_element(PATHS["bf16_remainder"]) == 26
    # the quantized paths run by default on a GPU, and on the CPU only when asked for (--path)
    assert workloads.default_paths("cuda") == workloads.BENCH_PATHS
    assert set(workloads.BENCH_PATHS) - set(workloads.default_paths("cpu")) == set(workloads.CPU_OPT_IN_PATHS)  # param 2+2, grad 2, remainder 2+2, states 16
    assert all(PATHS[p].quantized for p in workloads.CPU_OPT_IN_PATHS)
    # 8-bit states: codes and a scale per 256 of them, read and written, for m and v
    assert workloads.bytes_per_element(PATHS["fp32_8bit"]) == 12 + 4 * (1 + 4 / 256)
    assert workloads.bytes_per_element(PATHS["bf16_master_8bit"]) == 2 + 2 + 8 + 4 * (1 + 4 / 256)
    assert len(workloads.gpt2_124m_shapes()) == 148
    assert abs(sum(math.prod(s) for s in workloads.gpt2_124m_shapes()) - 124.4e6) < 0.1e6


ARGS = ["bench", "--quick", "--device", "cpu", "--workload", "small_2000x4096", "--path", "fp32",
        "--path", "bf16_states", "--no-progress"]


def test_bench_quick_prints_parity_zero(capsys, tmp_path):
    assert cli.main(ARGS + ["--json", str(tmp_path / "b.json"), "--plot", str(tmp_path / "b.png")]) == 0
    r = json.loads((tmp_path / "b.json").read_text())
    ours = [row for row in r["rows"] if row["impl"].startswith("ours:")]
    assert ours and all(row["parity_bits"] == 0 for row in ours)
    assert all(row["ms"] > 0 for row in r["rows"] if row["note"] == "")
    assert (tmp_path / "b.png").stat().st_size > 1000
    assert "x torch fused" in capsys.readouterr().out


@pytest.mark.slow  # full tier: a bench run, 16 CPU s measured
def test_bench_fails_loudly_when_a_backend_is_off_by_one_bit(monkeypatch, capsys):
    real = ops.step_function

    def corrupted(name):
        fn = real(name)
        if name == "reference":
            return fn

        def wrong(params, *rest, **options):
            fn(params, *rest, **options)
            w = params[-1].view(torch.int32 if params[-1].element_size() == 4 else torch.int16).view(-1)
            # the last word that is not a NaN (the parity data holds NaNs, and NaN against NaN counts as equal)
            last = int(torch.nonzero(~torch.isnan(params[-1].view(-1)))[-1])
            w[last] ^= 1
        return wrong

    monkeypatch.setattr(ops, "step_function", corrupted)
    assert cli.main(ARGS) == 1
    assert "PARITY FAILED" in capsys.readouterr().err


@pytest.mark.slow  # full tier: a bench run, 13 CPU s measured
def test_bench_survives_a_failing_backend_and_says_why(monkeypatch, capsys, tmp_path):
    """One backend's crash (an H100 had one) must not take the whole bench down: its row says why, the
    other rows and the parity column still print, and the exit status is non-zero."""
    real = bandwidth.make_optimizer

    def broken(impl, params, path):
        if impl == "ours:cpu":
            raise RuntimeError("expected scalar type Long but found Byte\nsecond line")
        return real(impl, params, path)

    monkeypatch.setattr(bandwidth, "make_optimizer", broken)
    out_json = tmp_path / "b.json"
    assert cli.main(ARGS + ["--json", str(out_json)]) == 1
    captured = capsys.readouterr()
    assert "FAILED: RuntimeError: expected scalar type Long but found Byte" in captured.out
    assert "ours:cpu small_2000x4096 fp32: RuntimeError" in captured.err
    r = json.loads(out_json.read_text())
    rows = {row["impl"]: row for row in r["rows"]}
    assert rows["ours:cpu"]["error"].startswith("RuntimeError") and rows["ours:cpu"]["ms"] is None
    assert rows["torch:fused"]["ms"] > 0 and rows["torch:fused"]["error"] is None
    assert r["failures"] == [f"ours:cpu small_2000x4096 {p}: RuntimeError: expected scalar type Long but found Byte"
                             for p in ("fp32", "bf16_states")]


def test_host_cost_table_on_cpu(capsys, monkeypatch):
    """The host-cost benchmark runs without a GPU: a regression in µs per tensor shows in CI,
    with the same gradients every step and with new ones at other addresses."""
    from adamw_tau.launch import tables
    builds = []
    real_build = tables.TablePlanner._build
    monkeypatch.setattr(tables.TablePlanner, "_build", lambda self, rows: builds.append(1) or real_build(self, rows))
    impls = ("ours:cpu", "ours:reference", "torch:fused")
    rows = host_cost.host_cost("cpu", list(impls), counts=(1, 40), reps=5)
    assert [(r.new_grads, r.impl, r.tensors) for r in rows] == [(f, i, n) for f in (False, True) for i in impls
                                                                for n in (1, 40)]
    assert all(r.error is None and math.isfinite(r.ms) and r.ms > 0 for r in rows)
    # ours:cpu builds its tables once with the same gradients, every step with new ones (3 warm-up + 5 timed)
    assert len(builds) == 2 * 1 + 2 * 8
    one, forty = (r.ms for r in rows if r.impl == "ours:cpu" and not r.new_grads)
    assert host_cost.us_per_tensor(rows, "ours:cpu") == pytest.approx((forty - one) / 39 * 1e3)
    one, forty = (r.ms for r in rows if r.impl == "ours:cpu" and r.new_grads)
    assert host_cost.us_per_tensor(rows, "ours:cpu", new_grads=True) == pytest.approx((forty - one) / 39 * 1e3)
    table = host_cost.format_host_table(rows)
    assert "µs/tensor" in table and "ours:reference" in table and "ours:cpu, new grads" in table
    assert cli.main(["bench", "--device", "cpu", "--host-only", "--quick", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "host cost" in out and "ours:cpu" in out and "torch:fused" in out and "workload" not in out


def test_client_step_table_on_cpu():
    """The HF-style client (52 tensors in 2 groups, lr changed every step) times ours beside torch fused."""
    rows = host_cost.client_cost("cpu", ["ours:cpu", "torch:fused"], reps=3)
    assert [r.tensors for r in rows] == [52, 52] and rows[0].params == rows[1].params > 4_000_000
    assert all(r.error is None and r.ms > 0 for r in rows)
    assert rows[0].vs_torch_fused == pytest.approx(rows[0].ms / rows[1].ms) and rows[1].vs_torch_fused == 1.0
    opt = host_cost.client_optimizer("ours:cpu", host_cost.client_model("cpu"))
    assert [len(g["params"]) for g in opt.param_groups] == [18, 34]  # matrices, vectors
    assert [t["weight_decay"] for t in opt.timescales()] == [pytest.approx(0.1), 0.0]
    table = host_cost.format_client_table(rows)
    assert "52 tensors" in table and "ours:cpu" in table and "failed" not in table
    # a backend that cannot run gets a row that says why; the others stand
    rows = host_cost.client_cost("cpu", ["ours:cuda", "torch:fused"], reps=2)
    assert rows[0].ms is None and "cuda" in rows[0].error and rows[1].ms > 0
    assert "failed" in host_cost.format_client_table(rows)


def test_back_to_back_timing_and_its_columns():
    """The b2b figure is the time per call of calls issued back to back; the table shows its
    columns only when some row has it (GPU runs)."""
    calls = []

    def fn():
        calls.append(1)
        time.sleep(0.002)
    ms = timing.time_stream_ms(fn, "cpu", steps=4, reps=3)
    assert len(calls) == 1 + 4 * 3 and 2.0 <= ms < 20.0
    report = bandwidth.Report("cuda", "GPU", torch.__version__)
    report.rows = [bandwidth.Row("w", "fp32", "ours:cuda", 1, 10, 280, ms=2.0, copy_ms=1.5, pct_copy=75.0,
                             ms_stream=1.6, pct_copy_stream=93.75, parity_bits=0)]
    table = bandwidth.format_table(report)
    assert "% copy b2b" in table and "93.8" in table and "1.600" in table
    report.rows[0].ms_stream = report.rows[0].pct_copy_stream = None
    assert "b2b" not in bandwidth.format_table(report)
