"""`adamw-tau sweep masters`: tiny runs (seconds) of the remainder format's training check. The
remainder run is played here by a test double (the format's own split, over a master_weights=True
optimizer) that can plant faults: the bitwise comparison counts a planted one-bit difference, a
planted parameter change stops the lockstep comparison at the step the gradients part, and an
optimizer that keeps no remainder fails its row with the reason while the other runs finish."""
import dataclasses
import math

import torch

from adamw_tau import AdamWTau, cli
from adamw_tau.formats.bf16_remainder import split
from adamw_tau.experiments.quality import masters, report, training

TINY = dataclasses.replace(training.MASTERS_QUICK, name="tiny", width=16, layers=1, head_dim=8, ctx=16, batch=4,
                           steps=6, eval_every=3, log_every=2, val_windows=16, tau_frac=0.5)


class RemainderDouble(AdamWTau):
    """An fp32-master optimizer that also keeps the format's remainder and leaves its bf16 param.
    ``flip_at``: after that step, one remainder bit is flipped; ``nudge_at``: after that step,
    one layer-norm gain is moved by one ulp (so the next gradients differ)."""
    flip_at = nudge_at = None

    def __init__(self, groups, **kw):
        super().__init__(groups, **{**kw, "master_weights": True})
        self.count = 0

    @torch.no_grad()
    def step(self, closure=None):
        super().step(closure)
        self.count += 1
        for group in self.param_groups:
            for p in group["params"]:
                bf16, rem = split(self.state[p]["master_param"])
                p.copy_(bf16)
                self.state[p]["master_remainder"] = rem
        first = self.param_groups[0]["params"][0]
        if self.count == self.flip_at:
            self.state[first]["master_remainder"].view(-1)[0] ^= 1
        if self.count == self.nudge_at:  # a layer-norm gain: every token's forward pass uses it
            self.param_groups[1]["params"][0].view(-1).view(torch.int16)[0] += 1


def _with_double(monkeypatch, flip_at=None, nudge_at=None):
    real = masters.make_optimizer

    def make(run, params, cfg, backend):
        if run != "master_remainder":
            return real(run, params, cfg, backend)
        opt = RemainderDouble(training.tau_groups(params, cfg), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps,
                              state_dtype=torch.float32, backend=backend)
        opt.flip_at, opt.nudge_at = flip_at, nudge_at
        return opt
    monkeypatch.setattr(masters, "make_optimizer", make)


def test_rows_columns_and_zero_differing_words_with_the_feature(tmp_path, monkeypatch, capsys):
    _with_double(monkeypatch)
    r = masters.run(str(tmp_path), TINY, progress=False)
    out = capsys.readouterr().out
    rows = report.read_rows(tmp_path / "masters_tiny.csv")
    assert list(rows[0]) == masters.COLUMNS and [x["run"] for x in rows] == list(masters.RUNS)
    assert all(x["status"] == "ok" and math.isfinite(float(x["final_val_loss"])) for x in rows)
    rem = r["rows"]["master_remainder"]
    assert rem["shadow_steps_compared"] == TINY.steps and rem["shadow_master_words_differing"] == 0
    assert rem["lockstep_steps_compared"] >= 1 and rem["lockstep_master_words_differing"] == 0
    assert rem["master_words"] == sum(p.numel() for p in training.build_model(TINY, torch.bfloat16, "cpu").parameters())
    steps = report.read_rows(tmp_path / "masters_tiny_steps.csv")
    assert list(steps[0]) == masters.STEP_COLUMNS and len(steps) == TINY.steps
    assert steps[0]["grad_words_differing"] == "0"  # the same init, the same batch
    assert "shadow (an fp32 master fed this run's gradients): 6 steps, 0 master words differing" in out
    assert out.count("claim 'both master runs beat bf16 without master on final val loss': ") == 1
    assert (tmp_path / "masters_tiny.png").stat().st_size > 10_000


def test_a_planted_one_bit_difference_is_counted(tmp_path, monkeypatch):
    _with_double(monkeypatch, flip_at=2)
    steps = masters.run(str(tmp_path), TINY, progress=False)["steps"]
    assert [s["shadow_master_words_differing"] for s in steps] == [0, 1, 0, 0, 0, 0]
    assert steps[1]["lockstep_master_words_differing"] == 1


def test_gradients_parting_stop_the_lockstep_comparison(tmp_path, monkeypatch, capsys):
    _with_double(monkeypatch, nudge_at=3)
    r = masters.run(str(tmp_path), TINY, progress=False)
    rem, steps = r["rows"]["master_remainder"], r["steps"]
    assert rem["grads_first_differ_step"] == 4 and rem["lockstep_steps_compared"] == 3
    assert steps[2]["lockstep_master_words_differing"] == 1  # the nudged word, rebuilt from the nudged param
    assert steps[3]["grad_words_differing"] > 0 and "lockstep_master_words_differing" not in steps[3]
    assert rem["shadow_steps_compared"] == TINY.steps  # the shadow takes this run's own gradients throughout
    assert "gradients first differed at step 4" in capsys.readouterr().out


def test_a_tree_without_the_feature_fails_the_row_and_finishes_the_others(tmp_path, monkeypatch, capsys):
    real = masters.make_optimizer
    monkeypatch.setattr(masters, "make_optimizer", lambda run, params, cfg, backend: real(
        "master_fp32" if run == "master_remainder" else run, params, cfg, backend))  # the string taken as True
    r = masters.run(str(tmp_path), TINY, progress=False)["rows"]
    assert r["master_remainder"]["status"] == "failed"
    assert "keeps no int16 'master_remainder' state" in r["master_remainder"]["note"]
    assert r["master_fp32"]["status"] == r["bf16_no_master"]["status"] == "ok"
    assert int(r["master_fp32"]["steps_done"]) == TINY.steps
    out = capsys.readouterr().out
    assert "remainder master checks: not run (RuntimeError: master_weights='remainder' keeps no" in out


def test_the_claim_is_printed_as_measured():
    def rows(fp32, rem_status="ok"):
        return {"bf16_no_master": dict(status="ok", final_val_loss=2.0),
                "master_fp32": dict(status="ok", final_val_loss=fp32, beats_no_master=fp32 < 2.0),
                "master_remainder": dict(status=rem_status, note="x", final_val_loss=1.9, beats_no_master=True)}
    assert ": holds;" in masters.claim_text(rows(1.9))
    assert ": does not hold;" in masters.claim_text(rows(2.1))
    assert ": not checked: a master run failed;" in masters.claim_text(rows(1.9, "failed"))


def test_cli_masters_in_this_tree(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(training, "MASTERS_QUICK", TINY)
    assert cli.main(["sweep", "masters", "--quick", "--out", str(tmp_path), "--no-progress"]) == 0
    rows = report.read_rows(tmp_path / "masters_tiny.csv")
    rem = next(x for x in rows if x["run"] == "master_remainder")
    assert rem["status"] == "ok" or "remainder" in rem["note"]  # the feature, or why not
    assert f"wrote {tmp_path / 'masters_tiny.png'}" in capsys.readouterr().out
