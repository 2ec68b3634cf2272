"""The launch tables (adamw_tau/launch/tables.py): the one place that builds what the Triton, CUDA
and CPU kernels read. The CPU op reads them through the same TensorArgs struct as the CUDA
kernel, so a wrong column, dtype or offset here fails on the CPU."""
import numpy as np
import pytest
import torch

from adamw_tau.launch import tables
from adamw_tau.testing.parity import PATHS, make_bucket, parity_bits


def _planner(sizes, offsets=None, amsgrad=True, path="bf16_master"):
    b = make_bucket(sizes, PATHS[path], amsgrad=amsgrad, offsets=offsets)
    ids = list(range(3, 3 + len(sizes)))
    grads = [torch.randn(t.shape).to(t.dtype) for t in b["params"]]
    planner = tables.TablePlanner(b["params"], b["exp_avgs"], b["exp_avg_sqs"], b["max_exp_avg_sqs"], b["masters"],
                                  ids, torch.device("cpu"))
    return b, grads, ids, planner


def test_tensor_table_rows_are_tensor_args():
    sizes = [5, 4096, 17]
    b, grads, ids, planner = _planner(sizes)
    (aligned,) = [t for t in planner.tables(b["params"], grads) if t.aligned]
    (rest,) = [t for t in planner.tables(b["params"], grads) if not t.aligned]
    assert aligned.tensors.dtype == torch.int64 and aligned.blocks.dtype == torch.int64
    assert aligned.tensors.shape == (1, len(tables.COLUMNS)) and rest.tensors.shape == (2, 8)
    row = aligned.tensors[0].tolist()
    i = 1  # the 4096-element tensor
    assert row == [b["params"][i].data_ptr(), grads[i].data_ptr(), b["exp_avgs"][i].data_ptr(),
                   b["exp_avg_sqs"][i].data_ptr(), b["max_exp_avg_sqs"][i].data_ptr(), b["masters"][i].data_ptr(),
                   4096, ids[i]]
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
    args = (tables.CHUNK, s, torch.bfloat16, torch.bfloat16, torch.float32, 0, True, False, True, False, None, None)
    with pytest.raises(RuntimeError, match="int64"):
        op(t.tensors.to(torch.int32), t.blocks, *args)
    with pytest.raises(RuntimeError, match="int64"):
        op(t.tensors.view(torch.uint8), t.blocks, *args)  # the H100's crash: int64 read as bytes
    with pytest.raises(RuntimeError, match="8 columns"):
        op(t.tensors[:, :7].contiguous(), t.blocks, *args)
    assert torch.equal(b["params"][0], before)
    op(t.tensors, t.blocks, *args)
    assert not torch.equal(b["params"][0], before)


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
    if backend == "triton":
        pytest.importorskip("triton")
        import os
        if os.environ.get("TRITON_INTERPRET") != "1" and not torch.cuda.is_available():
            pytest.skip("Triton needs CUDA or TRITON_INTERPRET=1")
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
