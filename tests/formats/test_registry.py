"""The format registry (adamw_tau/formats/registry.py) is the one list of state formats and
master forms: its ids are the C++ ``Kind`` and ``MasterForm`` values and the Triton kernel's
table, its table columns are the C++ ``TensorArgs`` and the Triton kernel's default, and the
test paths cover every quantized format."""
import re
from pathlib import Path

import pytest
import torch

from adamw_tau.formats import registry
from adamw_tau.launch import tables
from adamw_tau.testing.parity import PATHS

CSRC = Path(__file__).resolve().parents[2] / "csrc"


def _cpp_enum(header: str, pattern: str) -> dict[str, int]:
    text = (CSRC / header).read_text()
    body = re.search(pattern, text).group(1)
    return {name: int(value) for name, value in re.findall(r"(\w+)\s*=\s*(\d+)", body)}


def test_state_format_ids_are_the_kernels():
    kinds = _cpp_enum("adamw_math.h", r"enum class Kind \{([^}]*)\}")
    assert f"constexpr int kNumKinds = {len(kinds)};" in (CSRC / "adamw_math.h").read_text()
    codecs = re.findall(r"struct CodecOf<Kind::(\w+)>", (CSRC / "state_formats.h").read_text())
    assert {kinds[c] for c in codecs} == {f.id for f in registry.QUANTIZED}
    cpp_name = {"fp32": "F32", "bf16": "BF16", "fp16": "F16"}  # the rest: the name in capitals (Q8, ...)
    assert kinds == {cpp_name.get(f.name, f.name.upper()): f.id for f in registry.STATE_FORMATS.values()}
    assert list(kinds.values()) == list(range(len(kinds)))
    pytest.importorskip("triton")
    from adamw_tau.triton_kernels import adamw_fused
    assert set(adamw_fused.STATE_FORMATS) == set(registry.BY_ID)
    for fid, entry in adamw_fused.STATE_FORMATS.items():
        fmt = registry.BY_ID[fid]
        want = ((fmt.codec.BITS, fmt.block, fmt.codec.ZERO_CODE[True], fmt.codec.ZERO_BY_DECODE) if fmt.quantized
                else ())
        assert entry[1:] == want


def test_master_form_ids_are_the_kernels():
    forms = _cpp_enum("adamw_args.h", r"enum MasterForm : int64_t \{([^}]*)\}")
    assert forms == {"kNoMaster": registry.NO_MASTER.id, "kFp32Master": registry.FP32_MASTER.id,
                     "kRemainderMaster": registry.REMAINDER_MASTER.id}


def test_table_columns_are_named_once():
    text = (CSRC / "adamw_args.h").read_text()
    fields = re.findall(r"^\s+[\w\s*]+?\*?\s*(\w+);$", re.search(r"struct TensorArgs \{(.*?)\};", text, re.S).group(1),
                        re.M)
    assert tuple(fields) == tables.COLUMNS
    pytest.importorskip("triton")
    from adamw_tau.triton_kernels import adamw_fused
    assert adamw_fused.COLUMNS == tables.COLUMNS


def test_every_quantized_format_has_test_paths():
    for fmt in registry.QUANTIZED:
        assert {p.param_dtype for p in PATHS.values() if p.format is fmt} == {torch.float32, torch.bfloat16}
        assert {p.master for p in PATHS.values() if p.format is fmt} == {False, True, "remainder"}


def test_the_minimum_size_counts_the_whole_parameter():
    group = dict(state_dtype="8bit", min_quantized_numel=4096)
    assert registry.select(group, torch.empty(4096), 0) is registry.Q8
    assert registry.select(group, torch.empty(4095), 0) is registry.FP32
    assert registry.min_numel(dict(q8_min_numel=7)) == 7  # the old name
