"""The launch tables (adamw_tau/launch/tables.py): the one place that builds what the Triton, CUDA
and CPU kernels read. The CPU op reads them through the same TensorArgs struct as the CUDA
kernel, so a wrong column, dtype or offset here fails on the CPU."""
import numpy as np
import pytest
import torch

from adamw_tau.formats import registry
from required import require

from adamw_tau.core.contract import host_scalars
from adamw_tau.launch import tables
from adamw_tau.testing.bits import differing
from adamw_tau.testing.hard_data import hard_values
from adamw_tau.testing.parity import (PATHS, SCALAR_MODES, SCALE_KEYS, clone_bucket, make_bucket, parity_bits,
                                      step_both)


def _planner(sizes, offsets=None, amsgrad=True, path="bf16_master"):
    b = make_bucket(sizes, PATHS[path], amsgrad=amsgrad, offsets=offsets)
    ids = list(range(3, 3 + len(sizes)))
    grads = [torch.randn(t.shape).to(t.dtype) for t in b["params"]]
    scales = tuple(b.get(k, []) for k in SCALE_KEYS.values())
    planner = tables.TablePlanner(b["params"], b["exp_avgs"], b["exp_avg_sqs"], b["max_exp_avg_sqs"], b["masters"],
                                  ids, torch.device("cpu"), scales=scales)
    return b, grads, ids, planner


def test_tensor_table_rows_are_tensor_args():
    sizes = [5, 4096, 17]
    b, grads, ids, planner = _planner(sizes)
    (aligned,) = [t for t in planner.tables(b["params"], grads) if t.aligned]
    (rest,) = [t for t in planner.tables(b["params"], grads) if not t.aligned]
    assert aligned.tensors.dtype == torch.int64 and aligned.blocks.dtype == torch.int64
    assert aligned.tensors.shape == (1, len(tables.COLUMNS)) and rest.tensors.shape == (2, len(tables.COLUMNS))
    assert len(tables.COLUMNS) == 11
    row = aligned.tensors[0].tolist()
    i = 1  # the 4096-element tensor
    assert row == [b["params"][i].data_ptr(), grads[i].data_ptr(), b["exp_avgs"][i].data_ptr(),
                   b["exp_avg_sqs"][i].data_ptr(), b["max_exp_avg_sqs"][i].data_ptr(), b["masters"][i].data_ptr(),
                   4096, ids[i], 0, 0, 0]
    # 8-bit states: the scales' addresses in the last three columns
    b, grads, ids, planner = _planner(sizes, path="bf16_master_8bit")
    (aligned,) = [t for t in planner.tables(b["params"], grads) if t.aligned]
    assert aligned.tensors[0, tables.M_SCALE:].tolist() == [b[k][i].data_ptr() for k in SCALE_KEYS.values()]
    assert rest.tensors[:, tables.NUMEL].tolist() == [5, 17]
    assert rest.tensors[:, tables.PARAM_ID].tolist() == [ids[0], ids[2]]


def test_block_table_covers_every_element_once_with_64_bit_starts():
    numels = np.array([1, 4096, 4097, 2 ** 31 + 4097, 3], dtype=np.int64)
    blocks = tables.block_table(numels)
    assert blocks.dtype == np.int64
    for row, n in enumerate(numels):
        starts = blocks[blocks[:, 0] == row, 1]
        assert starts.tolist() == list(range(0, int(n), tables.CHUNK))
    big = blocks[blocks[:, 0] == 3, 1]
    assert big.max() == 2 ** 31 + 4096  # the last block starts past 2^31: it would wrap in 32 bits


def test_alignment_split_follows_addresses_and_sizes():
    sizes = [16, 16, 13, 4096]
    b, grads, ids, planner = _planner(sizes, offsets=[0, 1, 0, 0])
    ok = tables.aligned_rows(np.array([[p.data_ptr(), 0, 0, 0, 0, 0, p.numel(), 0] for p in b["params"]]))
    assert ok.tolist() == [True, False, False, True]
    launches = planner.tables(b["params"], grads)
    assert sorted((t.aligned, t.tensors.shape[0]) for t in launches) == [(False, 2), (True, 2)]


def _shifted(t: torch.Tensor, nbytes: int) -> torch.Tensor:
    """A copy of ``t`` in a storage that starts ``nbytes`` in: 16-byte aligned no more."""
    elements = nbytes // t.element_size()
    buf = torch.empty(t.numel() + elements, dtype=t.dtype)
    buf[elements:].copy_(t)
    return buf[elements:]


COLUMN_KEYS = {"p": "params", "m": "exp_avgs", "v": "exp_avg_sqs", "vmax": "max_exp_avg_sqs", "master": "masters"}


@pytest.mark.parametrize("shift", ["element", "8_bytes"])
@pytest.mark.parametrize("path,column", [("bf16_master", c) for c in tables.COLUMNS[:tables.MASTER + 1]] +
                         [("fp32", c) for c in tables.COLUMNS[:tables.MASTER]])
def test_every_address_column_decides_alignment(path, column, shift):
    """One tensor's one column off by an element (2 or 4 bytes) or by 8 bytes, the rest
    aligned: its row, and only its, goes to the unaligned launch (the Triton kernel is promised
    16-byte alignment for the other). Every column is tested, the fp32 master's too."""
    sizes = [16, 16, 4096]
    b = make_bucket(sizes, PATHS[path], amsgrad=True)
    grads = [torch.randn(t.shape).to(t.dtype) for t in b["params"]]
    if column == "g":
        grads[1] = _shifted(grads[1], grads[1].element_size() if shift == "element" else 8)
    else:
        t = b[COLUMN_KEYS[column]][1]
        b[COLUMN_KEYS[column]][1] = _shifted(t, t.element_size() if shift == "element" else 8)
    col = tables.COLUMNS.index(column)
    table = np.array([[b["params"][i].data_ptr(), grads[i].data_ptr(), b["exp_avgs"][i].data_ptr(),
                       b["exp_avg_sqs"][i].data_ptr(), b["max_exp_avg_sqs"][i].data_ptr(),
                       b["masters"][i].data_ptr() if b["masters"] else 0, sizes[i], i] for i in range(3)])
    assert table[1, col] % 16 != 0 and all(table[i, c] % 16 == 0 for i in (0, 2) for c in range(tables.MASTER + 1))
    assert tables.aligned_rows(table).tolist() == [True, False, True]
    planner = tables.TablePlanner(b["params"], b["exp_avgs"], b["exp_avg_sqs"], b["max_exp_avg_sqs"], b["masters"],
                                  [0, 1, 2], torch.device("cpu"))
    launches = planner.tables(b["params"], grads)
    rows = {t.aligned: t.tensors[:, tables.PARAM_ID].tolist() for t in launches}
    assert rows == {True: [0, 2], False: [1]}


def test_numel_not_a_multiple_of_8_is_unaligned():
    b = make_bucket([16, 12, 8, 4095], PATHS["fp32"], amsgrad=False)
    grads = [torch.randn(t.shape) for t in b["params"]]
    planner = tables.TablePlanner(b["params"], b["exp_avgs"], b["exp_avg_sqs"], [], [], [0, 1, 2, 3],
                                  torch.device("cpu"))
    rows = {t.aligned: t.tensors[:, tables.PARAM_ID].tolist() for t in planner.tables(b["params"], grads)}
    assert rows == {True: [0, 2], False: [1, 3]}


@pytest.mark.parametrize("scalars", SCALAR_MODES)
@pytest.mark.parametrize("backend", ["cpu", "triton"])
def test_new_gradients_are_read_never_a_stale_table(backend, scalars):
    """Params and states stay put; each step brings gradients at new addresses while the old
    ones stay alive (a stale table would read them without crashing), and one step changes
    a gradient in place (same address, new values). Counting planners cannot see this."""
    require(backend)
    path = PATHS["bf16_master"]
    sizes = [10, 4096, 20]
    ours = make_bucket(sizes, path, amsgrad=True, seed=3)
    ref = clone_bucket(ours)
    gen = torch.Generator().manual_seed(4)
    kept = []
    for t in range(1, 6):
        if t != 4:
            grads = [hard_values(n, gen, span=4.0, dtype=path.param_dtype).to(path.param_dtype) for n in sizes]
            kept.append(grads)
        else:
            for g in grads:  # the same tensors, new values
                g.copy_(hard_values(g.numel(), gen, span=4.0, dtype=path.param_dtype))
        hs = host_scalars(lr=1e-3, lr_peak=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, step=t, decay_mode="none")
        assert step_both(backend, ours, ref, grads, hs, scalars=scalars, amsgrad=True) == 0, t
    assert len({g.data_ptr() for gs in kept for g in gs}) == len(kept) * len(sizes)


def test_planner_reuses_tables_while_addresses_hold():
    b, grads, ids, planner = _planner([10, 20])
    first = planner.tables(b["params"], grads)
    assert planner.tables(b["params"], grads) is first
    checks = []
    new = [g.clone() for g in grads]
    second = planner.tables(b["params"], new, check=lambda: checks.append(1))
    assert checks == [1] and second is not first
    assert second[0].tensors[:, tables.G].tolist() == [g.data_ptr() for g in new]
    moved = [p.clone() for p in b["params"]]
    with pytest.raises(tables.StorageMoved):
        planner.tables(moved, new)
    assert planner.tables(b["params"], [g.t() if g.dim() > 1 else g[::1] for g in new]) is not None
    strided = [torch.randn(2 * g.numel()).to(g.dtype)[::2] for g in new]
    assert planner.tables(b["params"], strided) is None  # the caller steps contiguous copies


def test_new_gradients_get_one_full_check_then_a_shape_and_device_test():
    """[note: new gradients] in tables.py: a rebuild for gradients at new addresses runs the
    optimizer's full check only the first time, or when the quick test fails; block tables
    are sent again only when the aligned split changes."""
    b, grads, ids, planner = _planner([16, 32])
    checks = []
    (first,) = planner.tables(b["params"], grads, check=lambda: checks.append("full"))
    assert checks == ["full"] and first.aligned
    for _ in range(3):  # after zero_grad(): new tensors, new addresses
        new = [g.clone() for g in grads]
        (t,) = planner.tables(b["params"], new, check=lambda: checks.append("full"))
        assert t.tensors[:, tables.G].tolist() == [g.data_ptr() for g in new]
        assert t.blocks is first.blocks and t.tensors is not first.tensors
    assert checks == ["full"]
    wrong = [grads[0].clone(), torch.randn(33).to(grads[1].dtype)]
    with pytest.raises(RuntimeError, match="shape or device"):  # check() found nothing to name
        planner.tables(b["params"], wrong, check=lambda: checks.append("asked"))
    assert checks == ["full", "asked"]
    wrong = [grads[0].clone(), torch.randn(4, 8).to(grads[1].dtype)]  # same numel, other shape
    with pytest.raises(RuntimeError, match="shape or device"):
        planner.tables(b["params"], wrong)
    shifted = [torch.randn(17).to(grads[0].dtype)[1:], grads[1].clone()]  # 2 bytes off: not 16-byte aligned
    launches = planner.tables(b["params"], shifted)
    assert sorted(t.aligned for t in launches) == [False, True]
    assert all(t.blocks is not first.blocks for t in launches)


def test_cpu_op_rejects_tables_of_the_wrong_dtype_or_shape():
    from adamw_tau.launch import backends
    from adamw_tau.core.contract import host_scalars
    backends.launcher("cpu")
    b, grads, ids, planner = _planner([33])
    (t,) = planner.tables(b["params"], grads)
    s = host_scalars(lr=1e-3, lr_peak=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, step=1, decay_mode="none").as_tensor()
    before = b["params"][0].clone()
    op = torch.ops.adamw_tau.launch_.default
    args = (tables.CHUNK, s, torch.bfloat16, torch.bfloat16, registry.FP32.id, 0, True, False, True, False, None,
            None)
    with pytest.raises(RuntimeError, match="int64"):
        op(t.tensors.to(torch.int32), t.blocks, *args)
    with pytest.raises(RuntimeError, match="int64"):
        op(t.tensors.view(torch.uint8), t.blocks, *args)  # the H100's crash: int64 read as bytes
    with pytest.raises(RuntimeError, match="11 columns"):
        op(t.tensors[:, :8].contiguous(), t.blocks, *args)  # a table of before the 8-bit scale columns
    for fmt in registry.QUANTIZED:
        with pytest.raises(RuntimeError, match="multiple of 256"):
            op(t.tensors, t.blocks, 100, *args[1:4], fmt.id, *args[5:])
    with pytest.raises(RuntimeError, match="state_format must be"):
        op(t.tensors, t.blocks, *args[:4], 5, *args[5:])
    assert differing(b["params"][0], before) == 0
    op(t.tensors, t.blocks, *args)
    assert differing(b["params"][0], before) > 0


@pytest.mark.parametrize("swap", [("M", "V"), ("V", "VMAX"), ("P", "G")])
def test_a_wrong_column_fails_cpu_parity(swap, monkeypatch):
    """The parity tests see table bugs: with two columns swapped, the CPU op's bits differ.
    (Columns of one size only: swapping others makes the kernel write out of bounds.)"""
    a, b = swap
    col_a, col_b = getattr(tables, a), getattr(tables, b)
    monkeypatch.setattr(tables, a, col_b)
    monkeypatch.setattr(tables, b, col_a)
    tables._PLANNERS.clear()
    sizes = [40, 8]
    try:
        bits = parity_bits("cpu", PATHS["fp32"], sizes, steps=1, amsgrad=True)
    finally:
        tables._PLANNERS.clear()
    assert bits != 0


@pytest.mark.parametrize("backend", ["cpu", "triton"])
def test_misaligned_and_odd_tensors_stay_exact(backend):
    require(backend)
    sizes = [4096, 4099, 8, 9000, 16]
    assert parity_bits(backend, PATHS["bf16_states"], sizes, steps=2, offsets=[1, 0, 3, 0, 2], maximize=True) == 0
    assert parity_bits(backend, PATHS["fp32"], sizes, steps=2, offsets=[0, 1, 0, 2, 0]) == 0


def test_each_backend_gets_its_block_size():
    assert tables.chunk_for("triton") == 2048 and tables.chunk_for("cuda") == tables.chunk_for("cpu") == tables.CHUNK
    b, grads, ids, _ = _planner([5000])
    planner = tables.TablePlanner(b["params"], b["exp_avgs"], b["exp_avg_sqs"], b["max_exp_avg_sqs"], b["masters"],
                                  ids, torch.device("cpu"), tables.chunk_for("triton"))
    (t,) = planner.tables(b["params"], grads)
    assert t.chunk == 2048 and t.blocks[:, 1].tolist() == [0, 2048, 4096]
