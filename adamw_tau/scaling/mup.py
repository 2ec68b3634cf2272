"""μP parameter groups for AdamWTau, with the decay set by τ.

Convention (μP for Adam, Yang et al., "Tensor Programs V", arXiv:2203.03466, Table 3 with
the output layer's multiplier folded into its learning rate, i.e. its Table 8 form):

    class     which parameters                          Adam lr
    vector    biases, norm gains, every 1-D parameter   lr
    input     fan_in fixed, fan_out scales (embeddings) lr
    hidden    fan_in and fan_out scale                  lr / width_mult
    output    fan_in scales, fan_out fixed (readout)    lr / width_mult

width_mult = fan_in / base fan_in (for input: fan_out / base fan_out). The ``mup`` package's
MuAdam keeps the readout's lr and divides its output by width_mult instead; models built for
it should keep their MuReadout and read the ``output`` group's lr accordingly.

Decay: with no ``weight_decay`` the groups name no decay of their own and take the
optimizer's τ. In τ form every decayed group then decays by 1 − (lr_t/lr_peak)/τ_iter per
step at every width, which is a torch λ of 1/(lr_group · τ_iter): λ grows with width as
Wang & Aitchison (arXiv:2405.13698) prescribe. With ``weight_decay=λ`` (torch form) each
group gets λ · width_mult where its lr is divided by width_mult, so lr · λ stays constant.
Vector-like parameters get no decay unless a rule says otherwise.
"""
from __future__ import annotations

import fnmatch
import math
from typing import Callable, Iterable

import torch

CLASSES = ("vector", "input", "hidden", "output")
Rule = str | Callable[[str, torch.Tensor], bool]


def _matches(rules: Iterable[Rule], name: str, p: torch.Tensor) -> bool:
    for r in rules:
        if callable(r):
            if r(name, p):
                return True
        elif fnmatch.fnmatchcase(name, r) or r == name:
            return True
    return False


def _classify(infinite_in: bool, infinite_out: bool, ndim: int) -> str:
    if ndim <= 1:
        return "vector"
    if infinite_in and infinite_out:
        return "hidden"
    if infinite_in:
        return "output"
    return "input"


def _embedding_params(model: torch.nn.Module) -> set[int]:
    return {id(m.weight) for m in model.modules() if isinstance(m, (torch.nn.Embedding, torch.nn.EmbeddingBag))}


def classify(model: torch.nn.Module, base_model: torch.nn.Module | None = None, *, width: int | None = None,
             base_width: int | None = None) -> dict[str, tuple[str, float]]:
    """{name: (class, width_mult)} for the trainable parameters of ``model`` (tied ones once).

    Sources, in this order: ``base_model`` (shapes compared dim by dim, like mup's
    set_base_shapes); ``width``/``base_width`` (a dim that is a multiple of ``width`` scales);
    the ``infshape`` that mup's set_base_shapes attached to the parameters. Embedding weights
    are (num_embeddings, dim): their fixed vocabulary is the fan_in, so they are ``input``.
    FSDP2 DTensor parameters report their global shape, which is what is compared.
    """
    embeddings = _embedding_params(model)
    base = dict(base_model.named_parameters()) if base_model is not None else None
    out: dict[str, tuple[str, float]] = {}
    seen: set[int] = set()
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        shape = tuple(p.shape)
        if id(p) in embeddings and len(shape) == 2:
            shape = (shape[1], shape[0])  # (dim, vocab): out, in
        if base is not None:
            if name not in base:
                raise ValueError(f"mup_param_groups: parameter {name!r} has no counterpart in base_model; "
                                 "the base model must have the same parameter names at a smaller width")
            bshape = tuple(base[name].shape)
            if id(p) in embeddings and len(bshape) == 2:
                bshape = (bshape[1], bshape[0])
            if len(bshape) != len(shape):
                raise ValueError(f"mup_param_groups: parameter {name!r} has shape {tuple(p.shape)} but "
                                 f"{tuple(base[name].shape)} in base_model; only the sizes may differ, not the rank")
            if any(b > s for b, s in zip(bshape, shape)):
                raise ValueError(f"mup_param_groups: parameter {name!r} is smaller in the model {tuple(p.shape)} "
                                 f"than in base_model {tuple(base[name].shape)}; pass the narrower model as base")
            inf = [b != s for b, s in zip(bshape, shape)]
            mults = [s / b for b, s in zip(bshape, shape)]
        elif width is not None:
            if not base_width or base_width <= 0 or width <= 0:
                raise ValueError("mup_param_groups: width and base_width must both be positive integers")
            inf = [s % width == 0 for s in shape]
            mults = [width / base_width if i else 1.0 for i in inf]
        elif hasattr(p, "infshape"):
            dims = list(p.infshape)
            if id(p) in embeddings and len(dims) == 2:
                dims = dims[::-1]
            inf = [d.isinf() for d in dims]
            mults = [d.width_mult() for d in dims]
        else:
            raise ValueError(f"mup_param_groups: cannot tell how {name!r} scales: pass base_model=..., "
                             "or width=... and base_width=..., or prepare the model with mup.set_base_shapes")
        if len(shape) <= 1:
            out[name] = ("vector", mults[0] if mults else 1.0)
            continue
        inf_in = any(inf[1:])
        inf_out = inf[0]
        cls = _classify(inf_in, inf_out, len(shape))
        mult = (math.prod(mults[1:]) if inf_in else mults[0]) if cls != "input" else mults[0]
        out[name] = (cls, float(mult))
    return out


def mup_param_groups(model: torch.nn.Module, base_model: torch.nn.Module | None = None, *, lr: float,
                     width: int | None = None, base_width: int | None = None, weight_decay: float | None = None,
                     no_decay: Iterable[Rule] = (), decay: Iterable[Rule] = (),
                     overrides: Iterable[tuple[Rule, dict]] = ()) -> list[dict]:
    """Param groups for ``AdamWTau(groups, lr=lr, tau_iters=...)`` following μP for Adam.

    Args:
        lr: the base model's learning rate; each group's lr is scaled from it.
        weight_decay: torch-form λ at the base width; None leaves decay to the optimizer (τ form).
        no_decay / decay: names (fnmatch patterns) or predicates ``(name, param) -> bool`` that
            switch decay off / on; by default only vector-like parameters are not decayed.
        overrides: (rule, options) pairs; options are merged into the matching parameters'
            group (e.g. ``{"lr_mult": 0.5}`` or ``{"tau_iters": 1e4}``).
    Each group carries ``mup_class`` and ``width_mult`` for inspection.
    """
    classes = classify(model, base_model, width=width, base_width=base_width)
    named = dict(model.named_parameters())
    groups: dict[tuple, dict] = {}
    for name, (cls, mult) in classes.items():
        p = named[name]
        lr_mult = 1.0 if cls in ("vector", "input") else 1.0 / mult
        decayed = (cls != "vector" or _matches(decay, name, p)) and not _matches(no_decay, name, p)
        extra: dict = {}
        for rule, opts in overrides:
            if _matches([rule], name, p):
                extra.update(opts)
        lr_mult *= extra.pop("lr_mult", 1.0)
        key = (cls, mult, lr_mult, decayed, tuple(sorted(extra.items())))
        g = groups.get(key)
        if g is None:
            g = groups[key] = {"params": [], "lr": lr * lr_mult, "mup_class": cls, "width_mult": mult, **extra}
            if any(k in extra for k in ("tau_iters", "tau_epochs", "weight_decay")):
                pass  # an override's decay is explicit and wins
            elif not decayed:
                g["weight_decay"] = 0.0
            elif weight_decay is not None:
                g["weight_decay"] = weight_decay / lr_mult
            g["param_names"] = []
        g["params"].append(p)
        g["param_names"].append(name)
    return list(groups.values())
