"""`adamw-tau bench --memory`: bytes counted from the tensors held equal hand-computed ones on
small shapes, a shared storage counts once, a row that cannot be measured says why and the
table stands, a missing optional package says how to install it."""
import json
import math
import pathlib
import sys

import pytest
import torch
from required import require, require_package

from adamw_tau import cli
from adamw_tau.bench import ledger as ledger_module
from adamw_tau.bench import memory

SHAPES = [(64, 64), (64, 64), (100,)]  # two tensors the 8-bit anchors quantize (4096 elements), one they do not
N = sum(math.prod(s) for s in SHAPES)
BF16 = torch.bfloat16


def config(name: str) -> memory.Config:
    return next(c for c in memory.CONFIGS if c.name == name)


# name -> bytes per element of params, grads, states (both moments), master, by hand
HAND = {
    "torch AdamW, fp32": (4, 4, 8, 0),
    "torch AdamW, bf16 params (bf16 states, no master)": (2, 2, 4, 0),
    "ours, fp32": (4, 4, 8, 0),
    "ours, bf16 + fp32 master, fp32 states": (2, 2, 8, 4),
    "ours, bf16 + fp32 master, bf16 states": (2, 2, 4, 4),
    "ours, bf16 + stochastic rounding, bf16 states": (2, 2, 4, 0),
}


@pytest.mark.parametrize("name", HAND)
def test_bytes_equal_hand_computed_ones(name):
    if name.startswith("ours"):
        require("cpu")  # the backend auto picks on the CPU
    row = memory.measure(config(name), SHAPES)
    assert row.error is None, row.error
    p, g, s, m = HAND[name]
    assert row.bytes["params"] == p * N and row.bytes["grads"] == g * N
    assert row.bytes["states"] == s * N and row.bytes["master"] == m * N
    assert row.bytes["remainder"] == 0 and row.bytes["scales"] == 0
    # other: one fp32 step counter per tensor, and (ours) the launch tables the optimizer caches
    other = row.bytes["other"]
    assert other == 4 * len(SHAPES) if name.startswith("torch") else 4 * len(SHAPES) < other < 4096
    assert (row.total - other) / N == p + g + s + m  # 16, 8 or 12 bytes per parameter


class FlatOptimizer:
    """A planted optimizer: both moments of every param are views of one flat buffer, a qmap
    shared by all params, a "master" that is the param itself, and a scale under two keys."""

    def __init__(self, params):
        n = sum(p.numel() for p in params)
        self.flat = torch.zeros(2 * n)
        self.qmap = torch.zeros(256)
        self.state, at = {}, 0
        for p in params:
            k = p.numel()
            scale = torch.zeros(4)
            self.state[p] = {"exp_avg": self.flat[at:at + k], "exp_avg_sq": self.flat[n + at:n + at + k],
                             "qmap1": self.qmap, "absmax1": scale, "absmax1_again": scale.view(2, 2),
                             "master_param": p.detach()}
            at += k

    def step(self):
        pass


@pytest.mark.parametrize("name,states", [("ours, bf16 + remainder, fp32 states", 8),
                                         ("ours, bf16 + remainder, bf16 states", 4)])
def test_the_remainder_rows_hold_2_bytes_of_master(name, states):
    """The goal: 14 bytes per parameter with fp32 states, 10 with bf16 states."""
    require("cpu")
    row = memory.measure(config(name), SHAPES)
    assert row.error is None, row.error
    assert row.bytes["remainder"] == 2 * N and row.bytes["master"] == 0 and row.bytes["states"] == states * N
    assert row.bytes["params"] + row.bytes["grads"] + row.bytes["remainder"] + row.bytes["states"] == (6 + states) * N


def test_a_shared_storage_counts_once():
    params = [torch.zeros(s, requires_grad=True) for s in SHAPES]
    grads = torch.zeros(N)  # every grad a view of one buffer, as in a bucketed DDP
    at = 0
    for p in params:
        p.grad = grads[at:at + p.numel()].view(p.shape)
        at += p.numel()
    ledger = ledger_module.count(params, FlatOptimizer(params))
    assert ledger.bytes["params"] == 4 * N and ledger.bytes["grads"] == 4 * N
    assert ledger.bytes["states"] == 8 * N  # the flat buffer once, not once per view
    assert ledger.bytes["scales"] == 256 * 4 + len(SHAPES) * 16  # the shared qmap once, each scale once
    assert ledger.bytes["master"] == 0  # the param itself, already counted
    assert ledger.bytes["other"] == 0


def test_a_row_that_cannot_be_measured_says_why_and_the_table_stands():
    bad = memory.Config("bad state_dtype", "ours", torch.float32, {"state_dtype": "nonsense"})
    # accepted but without effect: master_weights=True holds a master, never a remainder
    no_effect = memory.Config("remainder in name only", "ours", BF16, {"master_weights": True}, "remainder")
    report = memory.run(quick=True, configs=[bad, no_effect, config("torch AdamW, fp32")], progress=False)
    rows = {r.config: r for r in report.rows}
    assert "state_dtype" in rows["bad state_dtype"].error and rows["bad state_dtype"].bytes == {}
    assert "master_weights=True had no effect" in rows["remainder in name only"].error
    assert "no master remainder" in rows["remainder in name only"].error
    assert rows["torch AdamW, fp32"].error is None and rows["torch AdamW, fp32"].total > 0
    assert rows["bad state_dtype"].step_ms is None and rows["torch AdamW, fp32"].step_ms > 0
    table = memory.format_table(report)
    assert "| bad state_dtype | n/a" in table and "not available: TypeError" in table


@pytest.mark.parametrize("impl,module", [("torchao", "torchao"), ("bnb", "bitsandbytes")])
def test_a_missing_optional_package_says_how_to_install_it(monkeypatch, impl, module):
    monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError
    monkeypatch.setitem(sys.modules, f"{module}.optim", None)
    row = memory.measure(memory.Config(impl, impl, torch.float32, needs="8bit"), SHAPES)
    assert f"{module} is not installed" in row.error and "pip install 'adamw-tau[anchors]'" in row.error
    assert row.bytes == {}


def test_bitsandbytes_rows_count_its_codes_absmax_and_shared_qmaps():
    require_package("bitsandbytes", "anchors")
    row = memory.measure(config("bitsandbytes AdamW8bit, bf16 params"), SHAPES)
    assert row.error is None, row.error
    assert row.bytes["params"] == 2 * N and row.bytes["grads"] == 2 * N
    # uint8 state1/state2 for the two 4096-element tensors; the 100-element one keeps fp32 states
    assert row.bytes["states"] == 2 * 4096 * 2 + 100 * 4 * 2
    # absmax1/absmax2: one fp32 per 256 elements; qmap1/qmap2 (256 fp32 each) shared by every param
    assert row.bytes["scales"] == 2 * 2 * 16 * 4 + 2 * 256 * 4
    assert row.note.startswith("bitsandbytes ")


def test_torchao_rows_count_the_subclass_inner_tensors():
    require_package("torchao.optim", "anchors")
    shapes = [(64, 64), (100,)]  # torch.compile runs once per shape: two shapes keep this near 20 s
    row = memory.measure(config("torchao AdamW8bit, fp32"), shapes)
    assert row.error is None, row.error
    assert row.bytes["states"] == 2 * 4096 + 2 * 100 * 4  # OptimState8bit's codes; zeros_like below 4096
    assert row.bytes["scales"] == 2 * (16 * 4 + 256 * 4)  # its scale and its own qmap, per moment
    assert row.note.startswith("torchao ")


def test_cli_memory_table_and_json(monkeypatch, tmp_path, capsys):
    require("cpu")
    monkeypatch.setattr(memory, "CONFIGS", tuple(config(n) for n in ("torch AdamW, fp32", "ours, fp32")) +
                        (memory.Config("ours, fp32, 8-bit states (planted)", "ours", torch.float32,
                                       {"state_dtype": "planted"}, "8bit"),))
    out = tmp_path / "m.json"
    assert cli.main(["bench", "--memory", "--quick", "--no-progress", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| ours, fp32 | 4.00 | 4.00 | 8.00 | - | - | - |" in text and "not available: TypeError" in text
    with open(out) as f:
        r = json.load(f)
    assert r["workload"] == "gpt2_quick" and r["numel"] == sum(math.prod(s) for s in memory.quick_shapes())
    torch_row = r["rows"][0]
    assert torch_row["per_param"]["states"] == 8.0 and torch_row["total"] == sum(torch_row["bytes"].values())
    assert r["rows"][2]["error"] and r["rows"][2]["bytes"] == {}
    with pytest.raises(SystemExit, match="--plot"):
        cli.main(["bench", "--memory", "--plot", str(tmp_path / "m.png")])


def test_the_anchors_extra_pins_what_the_table_names():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((pathlib.Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert sorted(extras[memory.EXTRA]) == sorted(pin for _, pin in memory.ANCHORS.values())
    assert not any(pin.split("==")[0] in " ".join(extras["test"]) for _, pin in memory.ANCHORS.values())


def test_the_peak_holds_every_gradient_with_the_ordinary_step_and_fewer_inside_backward(monkeypatch):
    """The peak column: with the ordinary step every gradient is alive at the end of backward;
    with the step inside backward (buckets of one tensor here) only the largest one is."""
    require("cpu")
    from adamw_tau.optim import step_in_backward
    monkeypatch.setattr(step_in_backward, "BUCKET_NUMEL", 0)
    plain = memory.measure(config("ours, fp32"), SHAPES)
    inside = memory.measure(config("ours, fp32, step in backward"), SHAPES)
    assert plain.error is None and inside.error is None, (plain.error, inside.error)
    for row in (plain, inside):
        assert row.peak["params"] == 4 * N and row.peak["states"] == 8 * N
    assert plain.peak["grads"] == 4 * N
    assert inside.peak["grads"] == 4 * 64 * 64  # the largest gradient, alive before its hook stepped it
    assert plain.peak_total - inside.peak_total == 4 * N - 4 * 64 * 64
    table = memory.format_table(memory.MemoryReport("w", 3, N, "cpu", "t", rows=[plain, inside]))
    assert "| peak |" in table and f"**{inside.peak_total / N:.2f}**" in table


def test_a_step_inside_backward_has_no_step_time_but_its_bytes():
    report = memory.run(quick=True, configs=[config("ours, fp32, step in backward")], progress=False)
    row = report.rows[0]
    assert row.error is None and row.total > 0 and row.peak
    assert row.step_ms is None  # its step() is a no-op: no 0.0 ms in the table
    assert "| - |" in memory.format_table(report)
