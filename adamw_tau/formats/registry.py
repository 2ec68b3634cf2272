"""The state formats and master forms, as data: one object each, one place.

Every layer that has to tell formats apart asks here, by the format's id or name, instead of
guessing from a dtype: the bucket layout (which keys a state owns, how it starts), the launch
tables and kernels (the id, ``StateFormat.id``, is csrc/adamw_math.h's ``Kind`` and the Triton
kernel's ``STATE_FORMAT``; tests/formats/test_registry.py ties the three), the reference step
(``decode`` / ``encode`` / ``zero_rule``), the checkpoints (which saved keys hold a moment) and
the test paths (testing/parity.py builds ``PATHS`` from ``STATE_FORMATS``).

A state format says:
- its name, its id and the ``state_dtype`` option that selects it;
- the keys, dtypes and shapes it owns per moment (``key``, ``scale_key``; ``new``);
- its encode and decode on the bits (the codec module for quantized formats);
- its minimum size: a quantized format applies to parameters of at least the group's
  ``min_quantized_numel`` elements, counted on the parameter's GLOBAL numel (a DTensor's
  ``numel()``), so that a sharded run picks the same format as one process.

Adding a blockwise format: a codec module beside q8_blockwise.py (its tables, rules and the
codec functions: n_blocks, codes_shape, new_state, encode, decode, zero_rule), one entry here;
for the kernels, its id in csrc/adamw_math.h (``Kind``), its codec header listed in
csrc/state_formats.h, and its entry in triton_kernels/adamw_fused.py (``STATE_FORMATS``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from . import bf16_remainder, q4_blockwise, q8_blockwise

MOMENTS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
MIN_QUANTIZED_NUMEL = 4096  # the default minimum size of a quantized format (bitsandbytes' and torchao's 4096)


def signed_for(moment: str) -> bool:
    """Which map a quantized moment uses: the signed one for exp_avg, the unsigned for the squares."""
    if moment == "exp_avg":
        return True
    if moment in ("exp_avg_sq", "max_exp_avg_sq"):
        return False
    raise KeyError(f"a state format keeps exp_avg, exp_avg_sq and max_exp_avg_sq, not {moment!r}")


@dataclass(frozen=True)
class StateFormat:
    """A moment's storage: plain values of ``dtype``, or (``codec`` set) blockwise codes and scales."""
    name: str
    id: int                 # csrc/adamw_math.h Kind, the Triton kernel's STATE_FORMAT
    option: object          # the group's state_dtype value that selects it
    dtype: torch.dtype      # the dtype of the moment's main tensor: its values, or uint8 codes
    codec: object = field(default=None, compare=False)  # formats.q8_blockwise, ...: a codec module

    @property
    def quantized(self) -> bool:
        return self.codec is not None

    @property
    def block(self) -> int:
        """Elements per scale (0: not blockwise)."""
        return self.codec.BLOCK if self.codec else 0

    def key(self, moment: str) -> str:
        """Where the moment's main tensor is kept: its own key for values, the codec's
        (``<moment>_q8``, ...) for codes (never the moment's own key: torch.optim.AdamW would read
        codes as values)."""
        return moment + self.codec.CODES_SUFFIX if self.codec else moment

    def scale_key(self, moment: str) -> str | None:
        return moment + self.codec.SCALE_SUFFIX if self.codec else None

    def keys(self, moment: str) -> tuple[str, ...]:
        return (self.key(moment), self.scale_key(moment)) if self.codec else (self.key(moment),)

    def n_blocks(self, numel: int) -> int:
        return self.codec.n_blocks(numel) if self.codec else 0

    def codes_shape(self, p: torch.Tensor, local: torch.Tensor) -> tuple:
        """The shape of the main tensor for parameter ``p`` (``local``: the shard a kernel steps)."""
        return self.codec.codes_shape(p, local) if self.codec else tuple(p.shape)

    def new(self, moment: str, p: torch.Tensor, local: torch.Tensor) -> dict:
        """A fresh state for ``moment``: zeros, or the zero code with zero scales (over ``local``'s blocks)."""
        if not self.codec:
            return {moment: torch.zeros_like(p, dtype=self.dtype, memory_format=torch.preserve_format)}
        codes, scales = self.codec.new_state(moment, p, local)
        return {self.key(moment): codes, self.scale_key(moment): scales}

    def decode(self, main: torch.Tensor, scales, moment: str, shape) -> torch.Tensor:
        """fp32 values of a moment: widened, or decoded from codes and scales."""
        if not self.codec:
            return main.to(torch.float32)
        return self.codec.decode(main, scales, signed_for(moment), shape)

    def encode(self, x: torch.Tensor, moment: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(main tensor, scales or None) of fp32 ``x``: rounded to nearest even, or encoded."""
        if not self.codec:
            return x.to(self.dtype), None
        return self.codec.encode(x.to(torch.float32), signed_for(moment))

    def zero_rule(self, m_codes: torch.Tensor, v_codes: torch.Tensor, v_scales: torch.Tensor, numel: int):
        """exp_avg's codes with the zero code where the second moment the next step divides by
        (its codes and scales) decodes to 0 (8-bit: where its code is 0)."""
        return self.codec.zero_rule(m_codes, v_codes, v_scales, numel)

    def scale_problem(self, state: dict, moment: str, local: torch.Tensor) -> str | None:
        """What is wrong with the moment's scales for a shard like ``local``, or None."""
        scale = state.get(self.scale_key(moment))
        scale = scale.to_local() if hasattr(scale, "to_local") else scale
        blocks = self.n_blocks(local.numel())
        if (isinstance(scale, torch.Tensor) and scale.dtype == torch.float32 and scale.shape == (blocks,)
                and scale.device == local.device):
            return None
        got = (f"{scale.dtype} of shape {tuple(scale.shape)} on {scale.device}" if isinstance(scale, torch.Tensor)
               else repr(scale))
        return (f"its {self.name} state {self.key(moment)!r} needs {self.scale_key(moment)!r}, float32 of shape "
                f"({blocks},) on {local.device} (one scale per {self.block} elements), got {got}")


FP32 = StateFormat("fp32", 0, torch.float32, torch.float32)
BF16 = StateFormat("bf16", 1, torch.bfloat16, torch.bfloat16)
FP16 = StateFormat("fp16", 2, torch.float16, torch.float16)  # torch's choice for fp16 params
Q8 = StateFormat("q8", 3, "8bit", torch.uint8, q8_blockwise)
Q4 = StateFormat("q4", 4, "4bit", torch.uint8, q4_blockwise)

STATE_FORMATS = {f.name: f for f in (FP32, BF16, FP16, Q8, Q4)}
BY_ID = {f.id: f for f in STATE_FORMATS.values()}
QUANTIZED = tuple(f for f in STATE_FORMATS.values() if f.quantized)
_BY_OPTION = {f.option: f for f in STATE_FORMATS.values()}
STATE_DTYPE_OPTIONS = (None, torch.float32, torch.bfloat16, *(f.option for f in QUANTIZED))


def of_option(option) -> StateFormat:
    return _BY_OPTION[option]


def of_dtype(dtype: torch.dtype) -> StateFormat:
    """The format of a state list given only its dtype, for callers of the list-form step that
    pass no ``state_format``: values of that dtype, or for uint8 the 8-bit format."""
    return Q8 if dtype == torch.uint8 else _BY_OPTION[dtype]


def resolve(state_format, dtype: torch.dtype) -> StateFormat:
    """A list-form step's format: its ``state_format`` (an id, a name or a StateFormat), else ``of_dtype``."""
    if state_format is None:
        return of_dtype(dtype)
    if isinstance(state_format, StateFormat):
        return state_format
    return STATE_FORMATS[state_format] if isinstance(state_format, str) else BY_ID[int(state_format)]


def min_numel(group: dict) -> int:
    """The group's minimum size for a quantized format: ``min_quantized_numel``, or its old name
    ``q8_min_numel``."""
    value = group.get("min_quantized_numel")
    if value is None:
        value = group.get("q8_min_numel")
    return MIN_QUANTIZED_NUMEL if value is None else value


def select(group: dict, p: torch.Tensor, master: int) -> StateFormat:
    """The format of p's moments: the group's ``state_dtype``, or torch's choice (the param's
    dtype; fp32 with a master). A quantized format applies from ``min_numel(group)`` elements
    of p's GLOBAL numel (a DTensor's numel is global: every shard keeps the same format)."""
    option = group["state_dtype"]
    if option is None:
        return FP32 if master else of_dtype(p.dtype)
    fmt = of_option(option)
    if fmt.quantized and p.numel() < min_numel(group):
        return FP32
    return fmt


def present(state: dict, moment: str) -> StateFormat | None:
    """The format a state (or a saved state) holds ``moment`` in, by its keys: codes under a
    quantized format's key, else values under the moment's own key; None if absent."""
    for fmt in QUANTIZED:
        t = state.get(fmt.key(moment))
        if isinstance(t, torch.Tensor) and t.dtype == torch.uint8:
            return fmt
    t = state.get(moment)
    if isinstance(t, torch.Tensor):
        return Q8 if t.dtype == torch.uint8 else FP32  # uint8 under the moment's key: 8-bit format version 1
    return None


@dataclass(frozen=True)
class MasterForm:
    """Where the exact fp32 weight lives: nowhere (the param is it), an fp32 copy, or the bf16 param
    plus an int16 remainder (formats.bf16_remainder)."""
    name: str
    id: int                 # csrc/adamw_args.h MasterForm, the Triton kernel's MASTER
    key: str | None         # its state key
    dtype: torch.dtype | None


NO_MASTER = MasterForm("none", 0, None, None)
FP32_MASTER = MasterForm("fp32", 1, "master_param", torch.float32)
REMAINDER_MASTER = MasterForm("remainder", 2, bf16_remainder.STATE_KEY, torch.int16)
MASTER_FORMS = {m.id: m for m in (NO_MASTER, FP32_MASTER, REMAINDER_MASTER)}


def master_of(masters) -> int:
    """The master form id of a list-form step's masters list (none, fp32 masters or int16 remainders)."""
    if not masters:
        return NO_MASTER.id
    return REMAINDER_MASTER.id if masters[0].dtype == torch.int16 else FP32_MASTER.id
