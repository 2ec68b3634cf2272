"""The CUDA kernel's body (csrc/adamw_kernel_body.h), built with g++ and run on the CPU over
every (block, thread) of the grid launch_cuda launches, on the tables tables.py builds: 0 bits
from the reference on every path and flag, and no write outside the tensors (guard words).
No GPU and no nvcc: CI runs these ([note: host-compilable] in the header)."""
import os
import subprocess
import sys

import numpy as np
import pytest
from tiers import tiered
import torch

from adamw_tau.formats import registry

from adamw_tau.core import reference
from adamw_tau.core.contract import host_scalars
from adamw_tau.launch import tables
from adamw_tau.testing import covering, host_body
from adamw_tau.testing.parity import PATHS, clone_bucket, differing_words, make_bucket, parity_bits, scale_lists

# With offsets: aligned rows (8, 40 when fp32), rows with aligned pointers and a tail (1, 17,
# 4099: vector passes, then the element path), misaligned rows (7, 4096, 9000) -- checked by
# test_cases_take_the_vector_path_the_element_path_and_tails.
SIZES = [1, 7, 8, 4099, 4096, 9000, 17, 40]
OFFSETS = [0, 1, 0, 0, 3, 2, 0, 4]
GUARD = 16  # elements after every written tensor: more than a vector pass (8) can overrun
CHUNKS = sorted({tables.CHUNK, *tables.CHUNK_FOR.values()})  # every block size in use
ODD_CHUNKS = [100, 4100]  # fewer elements than a block's threads take; blocks starting off a vector


@pytest.fixture(scope="module")
def body(host_body_library):
    return host_body.HostBody(host_body_library)


def _vec_of(path) -> int:
    """kVecOf in the header: 16 bytes of the narrowest stream."""
    sizes = [torch.empty(0, dtype=d).element_size() for d in (path.param_dtype, path.state_dtype)]
    return 16 // min(sizes)


def _kinds_of_blocks(launches, vec) -> dict:
    """How many blocks of these launches take the vector path, with or without a tail, and
    the element path, by the kernel's test (start % kVec, 16-byte addresses)."""
    out = {"vector": 0, "vector_with_tail": 0, "element": 0}
    for t in launches:
        rows = t.tensors.numpy()
        for row, start in t.blocks.numpy():
            r = rows[row]
            end = min(start + t.chunk, r[tables.NUMEL])
            if start % vec == 0 and np.all(r[tables.P:tables.MASTER + 1] % 16 == 0):
                out["vector"] += 1
                out["vector_with_tail"] += int((end - start) % vec != 0)
            else:
                out["element"] += 1
    return out


@pytest.mark.parametrize("path", ["fp32", "bf16_states", "bf16_master", "bf16_remainder"])
@pytest.mark.parametrize("chunk", CHUNKS + ODD_CHUNKS)
def test_cases_take_the_vector_path_the_element_path_and_tails(path, chunk):
    """The precondition of the parity tests below: their bucket makes aligned and unaligned
    launches, and blocks of all three kinds."""
    p = PATHS[path]
    b = make_bucket(SIZES, p, amsgrad=True, offsets=OFFSETS, guard=GUARD)
    grads = [t.to(p.param_dtype) for t in b["params"]]
    launches = tables.plan(b["params"], grads, b["exp_avgs"], b["exp_avg_sqs"], b["max_exp_avg_sqs"], b["masters"],
                           list(range(len(SIZES))), chunk)
    assert sorted(t.aligned for t in launches) == [False, True]
    kinds = _kinds_of_blocks(launches, _vec_of(p))
    assert kinds["vector"] > 0 and kinds["vector_with_tail"] > 0 and kinds["element"] > 0, kinds


BODY_FLAGS = [(False, False, None, "tau"), (True, True, 3.0, "lambda"), (False, True, 3.0, "none"),
              (True, False, None, "tau")]
BODY_CASES = [(path, *flags) for path in PATHS for flags in BODY_FLAGS]
# the fast tier: a covering set (every path; every pair of its parts and the flag sets), as cases.py
FAST_BODY_CASES = [BODY_CASES[i] for i in covering.pairwise(
    [dict(path=c[0], param=str(PATHS[c[0]].param_dtype), state=str(PATHS[c[0]].state_dtype),
          master=str(PATHS[c[0]].master), rounding=PATHS[c[0]].stochastic_rounding, flags=c[1:]) for c in BODY_CASES],
    singles=("path",))]


@pytest.mark.parametrize("path,amsgrad,maximize,scale,decay", tiered(BODY_CASES, FAST_BODY_CASES))
def test_body_bitwise_equals_reference(body, path, amsgrad, maximize, scale, decay):
    """Every dtype path and flag, misaligned offsets and tails, grad_scale 3.0 (not a power of
    two: the division rounds); 3 steps, the last with zero gradients."""
    assert parity_bits(body.step(), PATHS[path], SIZES, steps=3, amsgrad=amsgrad, maximize=maximize,
                       grad_scale=scale, decay=decay, offsets=OFFSETS, guard=GUARD) == 0


@pytest.mark.parametrize("path", ["fp32", "bf16_states", "bf16_master", "fp16_sr", "bf16_remainder"])
@pytest.mark.parametrize("chunk", CHUNKS + ODD_CHUNKS)
def test_every_block_size(body, path, chunk):
    assert parity_bits(body.step(chunk), PATHS[path], SIZES, steps=2, amsgrad=True, maximize=True, grad_scale=3.0,
                       offsets=OFFSETS, guard=GUARD) == 0


@pytest.mark.parametrize("by_value", [True, False], ids=["host_scalars_by_value", "scalars_tensor"])
@pytest.mark.parametrize("path", ["fp32", "bf16_sr", "fp16_master"])
def test_scalars_by_value_and_from_the_tensor(body, path, by_value):
    """launch_cuda passes a CPU scalars tensor by value and a device one by address; the step
    bits in slot 8 key stochastic rounding (bf16_sr)."""
    assert parity_bits(body.step(by_value=by_value), PATHS[path], SIZES, steps=3, amsgrad=True, grad_scale=3.0,
                       offsets=OFFSETS, guard=GUARD) == 0


HARD_GRADS = [float("nan"), float("inf"), float("-inf"), 0.0, -0.0, 1e-45, -1e-40, 1.2e-38, 3e38, -3e38, 65504.0,
              -1e-7]
HARD_PARAMS = [float("nan"), float("inf"), -0.0, 0.0, 1e-45, -3e38, 3e38, 6e-8, -1e-40]
HARD_STATES = [float("nan"), float("inf"), 0.0, 1e-45, 3e38, 1e-40]  # positive: exp_avg_sqs hold squares


def _sprinkle(ts, values, every: int):
    """Every ``every``-th element of each tensor (vector lanes and tails alike) cycles through ``values``."""
    for t in ts:
        idx = torch.arange(0, t.numel(), every)
        vals = torch.tensor(values, dtype=torch.float32).repeat(len(idx) // len(values) + 1)[:len(idx)]
        t.view(-1)[idx] = vals.to(t.dtype)


def _steps_of_both(step, bucket, path, grads_per_step, *, amsgrad, maximize, scale=None, found_inf=None):
    """Step ``bucket`` with ``step`` and a clone with the reference; returns the clone."""
    ref = clone_bucket(bucket)
    ids = list(range(3, 3 + len(bucket["params"])))
    for t, grads in enumerate(grads_per_step, start=1):
        s = host_scalars(lr=2e-3, lr_peak=5e-3, beta1=0.9, beta2=0.999, eps=1e-8, step=t, decay_mode="tau",
                         tau_iters=300.0).as_tensor()
        for impl, st in ((step, bucket), (reference.adamw_step_, ref)):
            impl(st["params"], grads, st["exp_avgs"], st["exp_avg_sqs"], st["max_exp_avg_sqs"], st["masters"], s, ids,
                 99, amsgrad, maximize, path.stochastic_rounding, scale, found_inf, **scale_lists(st),
                 state_format=path.format.id)
    return ref


@pytest.mark.parametrize("path", list(PATHS))
def test_hard_values(body, path):
    """NaN and +-inf gradients, +-0, subnormals, values to +-3e38 in params, masters, states
    and gradients, on vector lanes and in tails."""
    p = PATHS[path]
    gen = torch.Generator().manual_seed(6)
    grads_per_step = []
    for _ in range(2):
        grads = [torch.randn(n, generator=gen).to(p.param_dtype) for n in SIZES]
        _sprinkle(grads, HARD_GRADS, 2)
        grads_per_step.append(grads)
    for maximize, scale in ((False, None), (True, torch.tensor([3.0]))):
        ours = make_bucket(SIZES, p, amsgrad=True, offsets=OFFSETS, guard=GUARD, seed=5)
        _sprinkle(ours["params"] + ours["masters"] + ours["exp_avgs"], HARD_PARAMS, 5)
        _sprinkle(ours["exp_avg_sqs"] + ours["max_exp_avg_sqs"], HARD_STATES, 3)
        before = clone_bucket(ours)
        ref = _steps_of_both(body.step(), ours, p, grads_per_step, amsgrad=True, maximize=maximize, scale=scale)
        assert differing_words(ours, ref) == 0
        assert differing_words(ours, before) > 0  # the steps did write


Q8_PATHS = [name for name, p in PATHS.items() if p.quantized]
# 8-bit: every path at every chunk in the fast tier, as before; the other quantized formats
# every chunk once, on paths in turn (measured: 2 s a case on the 2-core machine), the rest full tier
_WARP_CASES = [(c, p) for c in (256, 2048, 4096) for p in Q8_PATHS]
_FAST_WARPS = [(c, p) for c, p in _WARP_CASES if PATHS[p].format.name == "q8"] + \
    [(c, [p for p in Q8_PATHS if PATHS[p].format is f][k % 4]) for f in registry.QUANTIZED if f.name != "q8"
     for k, c in enumerate((256, 2048, 4096))]


@pytest.mark.parametrize("chunk,path", tiered(_WARP_CASES, _FAST_WARPS))
def test_8bit_warps_at_every_block_size(body, path, chunk):
    """The quantized warp kernel (csrc/adamw_quant_kernel.h) at a chunk of one q8 block, Triton's and CUDA's:
    partial warps and partial blocks, misaligned storages, the scalars both ways."""
    for by_value in (True, False):
        assert parity_bits(body.step(chunk, by_value), PATHS[path], SIZES, steps=2, amsgrad=True, maximize=True,
                           grad_scale=3.0, offsets=OFFSETS, guard=GUARD) == 0


def _lane_run_bytes(bucket, path, amsgrad: bool, which) -> int:
    """The bytes a step's whole lanes move for tensors ``which`` of ``bucket`` (every lane whole):
    p read and written (written only behind an fp32 master, which is read and written), the
    gradient read, each moment's codes and a remainder read and written; scales are not lane runs."""
    total = 0
    for i in which:
        p, n = bucket["params"][i], bucket["params"][i].numel()
        codes = n * path.format.codec.BITS // 8
        total += p.element_size() * n * (1 if path.master is True else 2) + p.element_size() * n  # p, g
        total += 2 * codes * (3 if amsgrad else 2)
        if path.master:
            total += 2 * bucket["masters"][i].element_size() * n
    return total


# fast tier: each write form once, on the two formats in turn (2.7 s a path on the 2-core machine)
_FAST_LANE_PATHS = ["fp32_8bit", "bf16_master_4bit", "bf16_sr_8bit", "bf16_remainder_4bit"]


@pytest.mark.parametrize("path", tiered([(p,) for p in Q8_PATHS], [(p,) for p in _FAST_LANE_PATHS]))
def test_quantized_lanes_go_whole_where_the_addresses_allow(body, path):
    """The kernel's own decision (quant_lanes_aligned), seen through the host build's count of
    whole-access bytes: a bucket of aligned tensors, whole lanes only, moves every byte of its
    lane runs in whole accesses; misaligned by a storage offset, a tensor moves none (its lanes
    go element by element, and the host build aborts on a whole access its address would fault);
    the bits are the reference's either way."""
    p = PATHS[path]
    sizes = [4096, 512]
    # (storage offsets of each tensor's states and params, of its gradient; the tensors that go whole)
    for offsets, grad_offsets, whole in (([0, 0], [0, 0], [0, 1]), ([3, 0], [0, 0], [1]), ([0, 1], [0, 0], [0]),
                                         ([0, 0], [0, 1], [0]), ([5, 2], [0, 0], [])):
        b = make_bucket(sizes, p, amsgrad=True, offsets=offsets, seed=4)
        grads = [[torch.zeros(n + k, dtype=p.param_dtype)[k:].copy_(torch.randn(n))
                  for n, k in zip(sizes, grad_offsets)]]
        before = body.lane_bytes()
        ref = _steps_of_both(body.step(), b, p, grads, amsgrad=True, maximize=False)
        assert differing_words(b, ref) == 0
        assert body.lane_bytes() - before == _lane_run_bytes(b, p, True, whole), (offsets, whole)


def test_8bit_states_refuse_a_chunk_off_256(body):
    """A q8 block must not cross thread blocks: the planner and the driver refuse other chunks."""
    with pytest.raises(ValueError, match="multiple of 256"):
        parity_bits(body.step(100), PATHS["fp32_8bit"], [300], steps=1)
    import dataclasses
    b = make_bucket([300], PATHS["fp32_8bit"], amsgrad=False)
    (t,) = tables.plan(b["params"], b["params"], b["exp_avgs"], b["exp_avg_sqs"], [], [], [0], 256,
                       (b["exp_avg_scales"], b["exp_avg_sq_scales"], []))
    s = host_scalars(lr=1e-3, lr_peak=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, step=1, decay_mode="none").as_tensor()
    for fmt in registry.QUANTIZED:  # every quantized format
        with pytest.raises(RuntimeError, match="multiple of 256"):
            body.launch(dataclasses.replace(t, chunk=100), s, torch.float32, torch.float32, fmt.id, 0, False, False,
                        0, False)


@pytest.mark.parametrize("by_value", [True, False], ids=["host_scalars_by_value", "scalars_tensor"])
@pytest.mark.parametrize("path", ["fp32", "bf16_master", "bf16_sr", "fp32_8bit"])
def test_found_inf_skips_every_write(body, path, by_value):
    """found_inf != 0: no bit of params, masters or states changes; found_inf == 0: the step runs
    and equals the reference."""
    p = PATHS[path]
    b = make_bucket(SIZES, p, amsgrad=True, offsets=OFFSETS, guard=GUARD, seed=2)
    before = clone_bucket(b)
    grads = [[torch.randn(n).to(p.param_dtype) for n in SIZES]]
    scale = torch.tensor([3.0])
    _steps_of_both(body.step(by_value=by_value), b, p, grads, amsgrad=True, maximize=False, scale=scale,
                   found_inf=torch.tensor([1.0]))
    assert differing_words(b, before) == 0
    ref = _steps_of_both(body.step(by_value=by_value), b, p, grads, amsgrad=True, maximize=False, scale=scale,
                         found_inf=torch.tensor([0.0]))
    assert differing_words(b, ref) == 0
    assert differing_words(b, before) > 0


SANITIZED_RUN = """
import sys
from adamw_tau.testing.host_body import HostBody
from adamw_tau.testing.parity import PATHS, parity_bits
body = HostBody(sys.argv[1])
sizes, offsets = [1, 7, 8, 4099, 17, 40], [0, 1, 0, 0, 0, 4]
for name, path in PATHS.items():
    for chunk in (4096, 256 if path.quantized else 100):  # 8-bit states take multiples of 256
        for by_value in (True, False):
            # no guard: each tensor ends where its allocation ends, for ASan to see an overrun
            bits = parity_bits(body.step(chunk, by_value), path, sizes, steps=2, amsgrad=True, maximize=True,
                               grad_scale=3.0, offsets=offsets)
            print(name, chunk, by_value, bits)
print("calls", body.calls)
"""


@pytest.mark.slow  # full tier: ASan build and run, 43 CPU s measured
def test_sanitized_body_on_a_small_case(tmp_path):
    """The driver built with ASan and UBSan (-fno-sanitize-recover: the first report aborts),
    run by a Python that preloads libasan, over every path on a small misaligned bucket with
    tails, at two block sizes: no report, 0 bits."""
    library = host_body.build(tmp_path, sanitize=True)
    env = dict(os.environ, LD_PRELOAD=host_body.sanitizer_runtime(), ASAN_OPTIONS="detect_leaks=0",
               UBSAN_OPTIONS="print_stacktrace=1")
    done = subprocess.run([sys.executable, "-c", SANITIZED_RUN, str(library)], capture_output=True, text=True, env=env,
                          timeout=600, check=False)
    report = done.stdout[-2000:] + done.stderr[-6000:]
    assert done.returncode == 0, report
    assert "AddressSanitizer" not in done.stderr and "runtime error" not in done.stderr, report
    lines = done.stdout.split("\n")
    results = [line.split() for line in lines if line and not line.startswith("calls")]
    assert len(results) == len(PATHS) * 4 and all(r[-1] == "0" for r in results), done.stdout
    assert int(next(line for line in lines if line.startswith("calls")).split()[1]) > 0
