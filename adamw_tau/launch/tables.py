"""Launch tables: which tensors one launch steps, and which elements each block of it takes.

One place builds them for every kernel that reads them: the Triton kernel, the CUDA kernel
and the CPU op (csrc/adamw_cpu.cpp), so the CPU tests run the very tables the GPUs run.

* Tensor table, int64 ``[n, 11]``, one row per tensor: the addresses of p, g, m, v, vmax and
  the master (0 where absent; an fp32 master, or a bf16 param's int16 remainder: the
  launch's ``master`` form says which), numel, param_id, and the addresses of the fp32
  scales of 8-bit m, v, vmax (formats.q8_blockwise; 0 for other states). ``TensorArgs`` in csrc/adamw_step.h is
  this row, field for field (static_asserts there, a layout test here).
* Block table, int64 ``[n_blocks, 2]``: (row, first element). A block covers ``CHUNK``
  elements of one tensor, or its tail. int64 throughout: a 2^31-element tensor's blocks
  start past 2^31.
* ``aligned``: every address in the table is 16-byte aligned and every numel a multiple of
  ``VEC_ELEMS``. Kernels may then load and store 16 bytes at a time (the Triton kernel is
  told so by hints, which must be true). A bucket whose tensors differ is split into an
  aligned launch and an unaligned one; the bits do not depend on the split.

[note: what is cached]
The addresses of params and states do not change while the bucket layout holds;
gradients are new tensors after every ``zero_grad()``, but the caching allocator mostly
hands them the same addresses. ``TablePlanner`` keeps the tables of the last addresses
it saw, so a step whose params and gradients sit where they sat last step costs two
address lists and no copy; otherwise only the grad column is rewritten and the tensor
table is sent to the device again (pinned memory, non-blocking), with the block tables
too if the aligned split changed.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass

import numpy as np
import torch

from ..formats import registry

COLUMNS = ("p", "g", "m", "v", "vmax", "master", "numel", "param_id", "m_scale", "v_scale", "vmax_scale")
P, G, M, V, VMAX, MASTER, NUMEL, PARAM_ID, M_SCALE, V_SCALE, VMAX_SCALE = range(len(COLUMNS))
# every blockwise format's block (formats.registry; 256 for 8-bit) divides it: a chunk that is a
# multiple of it never splits a block of scales between two programs
QUANT_CHUNK_MULTIPLE = 256
CHUNK = 4096          # elements per block: the CUDA kernel and the CPU op
# Triton's block is its whole program. Swept on an H200 (do_bench, 268M elements, % of copy,
# fp32 / bf16 states / bf16 master): 4096 elements and 8 warps gave 97.1 / 76.4 / 94.5,
# 2048 and 8 warps 95.9 / 89.8 / 95.2, 4096 and 16 warps 96.5 / 86.6 / 94.6.
CHUNK_FOR = {"triton": 2048}


def chunk_for(backend: str) -> int:
    return CHUNK_FOR.get(backend, CHUNK)
VEC_BYTES = 16        # the widest load the kernels issue
VEC_ELEMS = 8         # 16 bytes of 16-bit values; numel must be a multiple for the aligned path

# The launch's ``master`` argument (csrc/adamw_args.h MasterForm, the Triton kernel's MASTER):
# what the master column points at (formats.registry.MASTER_FORMS).
NO_MASTER, FP32_MASTER, REMAINDER_MASTER = (registry.NO_MASTER.id, registry.FP32_MASTER.id,
                                            registry.REMAINDER_MASTER.id)
master_form = registry.master_of


_ptr = torch.Tensor.data_ptr
_shape = operator.attrgetter("shape")


class CaptureWithoutWarmup(RuntimeError):
    """What a step would build (states, step counts, tables) is not built inside a CUDA-graph capture."""

    def __init__(self, what: str):
        super().__init__(
            f"adamw_tau: {what} would be built inside a CUDA-graph capture (the first step, or one after new "
            "gradient tensors, a cleared state or a loaded state dict). Take eager warm-up steps before capturing "
            "and keep the gradients' tensors fixed across replays; torch.compile's mode='reduce-overhead' records "
            "the step with gradients at new addresses: compile step() with the default mode, or capture it with "
            "torch.cuda.graph after warm-up")


class StorageMoved(RuntimeError):
    """A parameter's storage is not where the tables say: rebuild the bucket."""


@dataclass
class LaunchTables:
    tensors: torch.Tensor   # int64 [n, 8], on the launch's device
    blocks: torch.Tensor    # int64 [n_blocks, 2], on the launch's device
    n_blocks: int
    aligned: bool
    chunk: int              # elements per block


def block_table(numels: np.ndarray, chunk: int = CHUNK) -> np.ndarray:
    """(row, first element) of every block, rows in order, int64."""
    numels = np.asarray(numels, dtype=np.int64)
    per_row = (numels + chunk - 1) // chunk
    rows = np.repeat(np.arange(len(numels), dtype=np.int64), per_row)
    first_block = np.cumsum(per_row) - per_row
    starts = (np.arange(len(rows), dtype=np.int64) - np.repeat(first_block, per_row)) * chunk
    return np.stack([rows, starts], axis=1) if len(rows) else np.zeros((0, 2), dtype=np.int64)


def aligned_rows(table: np.ndarray) -> np.ndarray:
    """Rows whose every address is 16-byte aligned and whose numel is a multiple of VEC_ELEMS."""
    addresses = table[:, P:MASTER + 1]
    ok = np.all(addresses % VEC_BYTES == 0, axis=1)  # absent tensors have address 0: aligned
    return ok & (table[:, NUMEL] % VEC_ELEMS == 0)


def _to_device(a: np.ndarray, device: torch.device) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(a))
    if device.type == "cpu":
        return t
    if torch.cuda.is_current_stream_capturing():
        # a capture records no host-to-device copy, and tables made inside one would be freed
        # while the graph still reads them (optim/step_plan.py's note on capture)
        raise CaptureWithoutWarmup("launch tables")
    # pinned and non-blocking: no step waits on the device. The host allocator keeps the
    # pinned block until the copy has run, so the host array may go at once.
    return t.pin_memory().to(device, non_blocking=True)


class TablePlanner:
    """The launch tables of one bucket: params and states fixed, gradients given per step.

    Build it when the bucket is built (its tensors then stay where they are); call
    ``tables(params, grads)`` every step. It returns the cached tables while the params and
    gradients sit at the addresses of the last call, and rebuilds them otherwise.

    [note: new gradients] After ``zero_grad()`` every gradient is a new tensor, and on the
    CPU (and wherever the allocator hands out other blocks) at a new address each step, so
    the rebuild is a per-step path too. Its first call runs ``check()`` (the optimizer's
    clear errors for every gradient); later rebuilds only test what the kernels rely on:
    each gradient's shape and device, in C-level maps. When that test fails, ``check()``
    says what is wrong. Dtypes need no test here: the bucket layout's key holds them.
    Measured on the 2-core CPU machine, 2000 tiny tensors, gradients at new addresses each
    step: 2.05 ms a step with the full check every time, 1.2 ms of it in the check.
    """

    def __init__(self, params, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, masters, param_ids,
                 device: torch.device, chunk: int = CHUNK, scales=((), (), ())):
        n = len(params)
        self.device = torch.device(device)
        if any(scales) and chunk % QUANT_CHUNK_MULTIPLE:
            raise ValueError(f"adamw_tau: quantized states need blocks of a multiple of {QUANT_CHUNK_MULTIPLE} "
                             f"elements, got {chunk}")
        self.chunk = chunk
        rows = np.zeros((n, len(COLUMNS)), dtype=np.int64)
        for col, ts in ((P, params), (M, exp_avgs), (V, exp_avg_sqs), (VMAX, max_exp_avg_sqs), (MASTER, masters),
                        (M_SCALE, scales[0]), (V_SCALE, scales[1]), (VMAX_SCALE, scales[2])):
            if ts:
                rows[:, col] = list(map(_ptr, ts))
        rows[:, NUMEL] = list(map(torch.Tensor.numel, params))
        rows[:, PARAM_ID] = list(param_ids)
        live = rows[:, NUMEL] > 0  # empty tensors have no blocks and no row
        self._rows = rows[live]
        self._live = None if live.all() else np.flatnonzero(live).tolist()
        live_params = params if self._live is None else [params[i] for i in self._live]
        self._p_addresses = self._rows[:, P].tolist()
        self._shapes = list(map(_shape, live_params))
        self._devices = list(map(torch.Tensor.get_device, live_params))
        self._key: list | None = None
        self._checked = False
        self._tables: list[LaunchTables] = []
        self._split: tuple | None = None  # (aligned mask, block tables) of the last build
        # aligned_rows of every column but the grad's (still 0 here), tested once
        self._fixed_ok = aligned_rows(self._rows)

    def tables(self, params, grads, check=None) -> list[LaunchTables] | None:
        """The tables for these tensors, or None if a gradient is not contiguous. ``check()``
        raises, before any table is built, on a gradient the kernels cannot step (the
        class's note says when it runs)."""
        if self._live is not None:
            params = [params[i] for i in self._live]
            grads = [grads[i] for i in self._live]
        try:
            key = list(map(_ptr, params))
            key += map(_ptr, grads)
        except RuntimeError:  # a sparse gradient has no data_ptr: check() says what is wrong
            key = None
        if key is not None and key == self._key:
            return self._tables
        if check is not None and (key is None or not self._checked):
            check()
            self._checked = True
        if key is None:
            raise RuntimeError("adamw_tau: a gradient has no data pointer (sparse or meta): the kernels step dense "
                               "tensors")
        if not all(map(torch.Tensor.is_contiguous, grads)):
            self._key = None
            return None  # the caller steps contiguous copies instead
        n = len(params)
        if key[:n] != self._p_addresses:  # before the shape test: a replaced p.data may have a new shape
            raise StorageMoved("a parameter's storage moved since its bucket was built (p.data was replaced)")
        if not self._fits(grads):
            if check is not None:
                check()  # raises with the parameter's name and what is wrong
            raise RuntimeError("adamw_tau: a gradient's shape or device differs from its parameter's")
        self._rows[:, G] = key[n:]
        self._tables = self._build(self._rows)
        self._key = key
        return self._tables

    def _fits(self, grads) -> bool:
        return list(map(_shape, grads)) == self._shapes and list(map(torch.Tensor.get_device, grads)) == self._devices

    def _build(self, rows: np.ndarray) -> list[LaunchTables]:
        ok = self._fixed_ok & (rows[:, G] % VEC_BYTES == 0)  # aligned_rows(rows)
        # the block tables depend only on numels and the aligned split; a new gradient address
        # rarely changes the split, and then only the tensor table goes to the device again
        if self._split is None or not np.array_equal(self._split[0], ok):
            blocks_for = {}
            for aligned in (True, False):
                part = rows[ok == aligned]
                if len(part):
                    blocks = block_table(part[:, NUMEL], self.chunk)
                    blocks_for[aligned] = (_to_device(blocks, self.device), len(blocks))
            self._split = (ok, blocks_for)
        return [LaunchTables(_to_device(rows[ok == aligned], self.device), blocks, n_blocks, aligned, self.chunk)
                for aligned, (blocks, n_blocks) in self._split[1].items()]


def check_bucket(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, masters, param_ids, amsgrad,
                 scales=((), (), ()), state_format=None) -> registry.StateFormat:
    """Raise, before any tensor is touched, unless the lists form one bucket the kernels can step:
    equal lengths, one dtype per list (fp32 or the params' for grads), one device, contiguous,
    equal numels; quantized states (``state_format``, formats.registry) as uint8 codes of the
    format's size with one fp32 scale tensor each of ceil(numel / block). Returns the format."""
    n = len(params)
    if not (len(grads) == len(exp_avgs) == len(exp_avg_sqs) == len(param_ids) == n):
        raise RuntimeError("adamw_tau: params, grads, exp_avgs, exp_avg_sqs and param_ids must have the same length")
    if amsgrad and len(max_exp_avg_sqs) != n:
        raise RuntimeError("adamw_tau: amsgrad needs one max_exp_avg_sq per param")
    if masters and len(masters) != n:
        raise RuntimeError("adamw_tau: masters must be empty or one per param")
    if n == 0:
        return registry.resolve(state_format, torch.float32)
    if params[0].dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise RuntimeError(f"adamw_tau: params[0] must be float32, bfloat16 or float16, got {params[0].dtype}")
    if exp_avgs[0].dtype not in (torch.float32, torch.bfloat16, torch.float16, torch.uint8):
        raise RuntimeError(f"adamw_tau: exp_avgs[0] must be float32, bfloat16, float16 or uint8 (codes), got "
                           f"{exp_avgs[0].dtype}")
    fmt = registry.resolve(state_format, exp_avgs[0].dtype)
    if exp_avgs[0].dtype != fmt.dtype:
        raise RuntimeError(f"adamw_tau: the {fmt.name} state format keeps {fmt.dtype} states, got {exp_avgs[0].dtype}")
    _check_scales(params, fmt, amsgrad, scales)
    device = params[0].device
    grad_dtypes = (torch.float32, params[0].dtype)
    lists = [("params", params, (params[0].dtype,)), ("grads", grads, grad_dtypes),
             ("exp_avgs", exp_avgs, (exp_avgs[0].dtype,)), ("exp_avg_sqs", exp_avg_sqs, (exp_avgs[0].dtype,))]
    if amsgrad:
        lists.append(("max_exp_avg_sqs", max_exp_avg_sqs, (exp_avgs[0].dtype,)))
    if masters:
        if masters[0].dtype == torch.int16 and params[0].dtype != torch.bfloat16:
            raise RuntimeError(f"adamw_tau: int16 master remainders belong to bfloat16 params, got {params[0].dtype}")
        lists.append(("masters", masters, (masters[0].dtype if masters[0].dtype == torch.int16 else torch.float32,)))
    states = ("exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs")
    for name, ts, dtypes in lists:
        for i, (t, p) in enumerate(zip(ts, params)):
            if t.layout != torch.strided:
                raise RuntimeError(f"adamw_tau: {name}[{i}] is {t.layout}; the kernels step dense tensors")
            numel = p.numel() if name not in states else math.prod(fmt.codes_shape(p, p))
            if t.dtype not in dtypes or t.device != device or t.numel() != numel or not t.is_contiguous():
                raise RuntimeError(f"adamw_tau: {name}[{i}] must be contiguous, on {device}, with {numel} "
                                   f"elements of dtype {' or '.join(map(str, dtypes))}; got {t.dtype} on {t.device} "
                                   f"with {t.numel()} elements{'' if t.is_contiguous() else ', not contiguous'}")
    return fmt


def _check_scales(params, fmt: registry.StateFormat, amsgrad: bool, scales) -> None:
    names = ("exp_avg_scales", "exp_avg_sq_scales", "max_exp_avg_sq_scales")
    for k, (name, ts) in enumerate(zip(names, scales)):
        want = fmt.quantized and (k < 2 or amsgrad)
        if not want:
            if len(ts):
                raise RuntimeError(f"adamw_tau: {name} are given, but the states are not quantized (uint8 codes)"
                                   if not fmt.quantized else f"adamw_tau: {name} are given without amsgrad")
            continue
        if len(ts) != len(params):
            raise RuntimeError(f"adamw_tau: {fmt.name} states need one tensor of {name} per param, got {len(ts)} "
                               f"for {len(params)} params")
        for i, (t, p) in enumerate(zip(ts, params)):
            blocks = fmt.n_blocks(p.numel())
            if t.dtype != torch.float32 or t.device != p.device or t.numel() != blocks or not t.is_contiguous():
                raise RuntimeError(f"adamw_tau: {name}[{i}] must be {blocks} contiguous float32 values on {p.device} "
                                   f"(one per {fmt.block} elements); got {t.dtype} with {t.numel()} on {t.device}")


def plan(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, masters, param_ids,
         chunk: int = CHUNK, scales=((), (), ())) -> list[LaunchTables]:
    """Tables for one call of the list-form op (torch.compile, tests): cached by every address."""
    key = (params[0].device, chunk, *(tuple(map(_ptr, ts)) for ts in (params, exp_avgs, exp_avg_sqs, max_exp_avg_sqs,
                                                                masters, *scales)),
           tuple(map(torch.Tensor.numel, params)), tuple(param_ids))
    planner = _PLANNERS.pop(key, None)
    if planner is None:
        planner = TablePlanner(params, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, masters, param_ids,
                               params[0].device, chunk, scales)
    _PLANNERS[key] = planner  # most recently used last
    if len(_PLANNERS) > _MAX_PLANNERS:
        _PLANNERS.pop(next(iter(_PLANNERS)))
    return planner.tables(params, grads)


_PLANNERS: dict = {}
_MAX_PLANNERS = 16
