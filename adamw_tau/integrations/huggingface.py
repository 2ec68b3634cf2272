"""Hugging Face transformers' Trainer with AdamWTau, without patching transformers.

``TrainingArguments.optim`` is a closed enum, so ``optim="adamw_tau"`` needs a change in
transformers. What works as it is:

* transformers 5.x: ``Trainer(..., optimizer_cls_and_kwargs=(TrainerOptimizer, kwargs))``.
  A ``cls`` that is not a torch Optimizer is a factory: the Trainer calls
  ``cls()(model, **kwargs)``, so the groups are built here, by parameter name. ``kwargs``
  carry ``args=`` (the TrainingArguments), which the Trainer gives a factory no other way.
* any version: ``Trainer(..., optimizers=(build_optimizer(model, ...), None))`` (refused by
  the Trainer under FSDP).

Passing ``AdamWTau`` itself as ``cls`` also runs, but the Trainer then builds the groups with
``weight_decay=args.weight_decay`` on the decayed one: a τ given in ``kwargs`` is overridden
by that λ (0.0 by default: no decay at all). The factory avoids this.

With ``step_in_backward=True`` in ``kwargs`` the factory first checks ``TrainingArguments`` for
what the step inside backward cannot follow (``check_step_in_backward``): global-norm clipping
(``max_grad_norm``, 1.0 by default) and fp16's GradScaler. With ``gradient_accumulation_steps > 1``
it hooks the model (``AccumulateUntilSync``) so that every micro-batch's backward but the last
runs inside ``opt.accumulating()``.

The groups are the Trainer's own split (``Trainer.get_decay_parameter_names``: biases and norm
weights not decayed), or μP groups from ``adamw_tau.mup_param_groups`` with the same split.
"""
from __future__ import annotations

import torch

from ..optim.optimizer import AdamWTau
from ..scaling.mup import mup_param_groups
from .requires import require


def decay_parameter_names(model: torch.nn.Module) -> set[str]:
    """The names of the parameters the Trainer decays: transformers' own rule."""
    trainer = require("transformers", "hf").Trainer
    if hasattr(trainer, "get_decay_parameter_names"):
        return set(trainer.get_decay_parameter_names(None, model))  # it does not use self
    # older transformers (before the method): its rule then, LayerNorm weights and biases not decayed
    norms = {id(p) for m in model.modules() if isinstance(m, torch.nn.LayerNorm) for p in m.parameters()}
    return {n for n, p in model.named_parameters() if id(p) not in norms and "bias" not in n}


def param_groups(model: torch.nn.Module, *, lr: float, weight_decay: float | None = None,
                 mup: dict | None = None) -> list[dict]:
    """The Trainer's decay / no-decay split as AdamWTau groups.

    The decayed group names no decay of its own, so it takes the optimizer's (τ or λ); the
    other has ``weight_decay=0.0``. With ``mup`` (the keyword arguments of
    ``mup_param_groups``: ``base_model=``, or ``width=`` and ``base_width=``) the groups are μP's,
    with the Trainer's no-decay parameters switched off; ``weight_decay`` is then the λ at the
    base width (None: the optimizer's τ).
    """
    decayed = decay_parameter_names(model)
    if mup is not None:
        return mup_param_groups(model, lr=lr, weight_decay=weight_decay,
                                no_decay=[lambda name, p: name not in decayed], **mup)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [{"params": [p for n, p in named if n in decayed]},
              {"params": [p for n, p in named if n not in decayed], "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_optimizer(model: torch.nn.Module, *, lr: float, mup: dict | None = None, **kwargs) -> AdamWTau:
    """AdamWTau over the Trainer's split; ``kwargs`` are AdamWTau's (the decay: ``tau_iters=``,
    ``tau_epochs=`` with ``iters_per_epoch=``, or ``weight_decay=``)."""
    groups = param_groups(model, lr=lr, weight_decay=kwargs.get("weight_decay") if mup else None, mup=mup)
    return AdamWTau(groups, lr=lr, **kwargs)


DECAY_KWARGS = ("tau_iters", "tau_epochs", "iters_per_epoch", "weight_decay")
CARD_NAME = "adamw_tau"


def from_training_arguments(args, kwargs: dict) -> dict:
    """``kwargs`` with what ``TrainingArguments`` set and they leave out, as transformers' own
    AdamW takes it: ``learning_rate`` as lr, ``(adam_beta1, adam_beta2)`` as betas,
    ``adam_epsilon`` as eps, and ``weight_decay`` as λ when ``kwargs`` name no decay; and
    ``max_grad_norm`` (> 0) as the optimizer's, which clips inside its step. What ``kwargs``
    give wins (``max_grad_norm=None`` leaves the clipping to the Trainer)."""
    given = {"lr": args.learning_rate, "betas": (args.adam_beta1, args.adam_beta2), "eps": args.adam_epsilon}
    if not any(kwargs.get(k) is not None for k in DECAY_KWARGS):
        given["weight_decay"] = args.weight_decay
    if "max_grad_norm" not in kwargs:
        given["max_grad_norm"] = args.max_grad_norm if args.max_grad_norm and args.max_grad_norm > 0 else None
    return {**given, **kwargs}


def record_in_training_arguments(args, kwargs: dict) -> None:
    """Write what ran into ``args``, the fields ``Trainer.create_model_card()`` reads for its
    optimizer line (``optim``, ``adam_beta1``/``adam_beta2``, ``adam_epsilon``, ``optim_args``)
    and ``learning_rate``: transformers records ``args.optim`` there, which a factory replaces. An
    optimizer that clips sets ``args.max_grad_norm`` to 0, so the Trainer does not clip again."""
    args.optim = CARD_NAME
    args.learning_rate = kwargs["lr"]
    args.adam_beta1, args.adam_beta2 = kwargs["betas"]
    args.adam_epsilon = kwargs["eps"]
    rest = {k: ("+".join(sorted(v)) if isinstance(v, dict) else v)  # mup: the keys it was given
            for k, v in kwargs.items() if k not in ("lr", "betas", "eps") and v is not None}
    args.optim_args = ",".join(f"{k}={v}" for k, v in rest.items())  # transformers' "k=v,k=v" form
    if kwargs.get("max_grad_norm") is not None:
        args.max_grad_norm = 0.0  # the optimizer clips: the Trainer must not clip a second time


class TrainerOptimizer:
    """The factory for transformers 5.x's ``optimizer_cls_and_kwargs=(TrainerOptimizer, kwargs)``.

    The Trainer calls ``TrainerOptimizer()(model, **kwargs)`` and gives a factory nothing of
    ``TrainingArguments``, so ``kwargs`` carry them: ``args=`` (required), then
    ``build_optimizer``'s keyword arguments, which win over what ``args`` set
    (``from_training_arguments``). What ran is written back into ``args`` for the model card
    (``record_in_training_arguments``).
    """

    def __call__(self, model: torch.nn.Module, *, args=None, **kwargs) -> AdamWTau:
        if args is None:
            raise TypeError("TrainerOptimizer: put args=<your TrainingArguments> in optimizer_cls_and_kwargs' kwargs; "
                            "the Trainer does not pass them to an optimizer factory, and without them its "
                            "learning_rate, adam_beta1, adam_beta2, adam_epsilon and weight_decay would not apply")
        if kwargs.get("step_in_backward"):
            check_step_in_backward(args)
        kwargs = from_training_arguments(args, kwargs)
        optimizer = build_optimizer(model, **kwargs)
        if kwargs.get("step_in_backward") and args.gradient_accumulation_steps > 1:
            model.register_forward_pre_hook(AccumulateUntilSync(optimizer))
        record_in_training_arguments(args, kwargs)
        return optimizer


def check_step_in_backward(args) -> None:
    """Refuse ``TrainingArguments`` the step inside backward cannot follow, before the
    optimizer exists (the Trainer builds it at the start of ``train()``)."""
    where = "TrainerOptimizer(step_in_backward=True)"
    if args.max_grad_norm and args.max_grad_norm > 0:
        raise ValueError(
            f"{where}: TrainingArguments.max_grad_norm={args.max_grad_norm} (the Trainer's default is 1.0) clips by "
            "the global norm after backward, when every parameter was already stepped inside it and its gradient "
            "freed: it would clip nothing. Set max_grad_norm=0, or use step_in_backward=False (the factory then "
            "hands max_grad_norm to the optimizer, which clips inside its step)")
    if args.fp16:
        raise ValueError(
            f"{where}: TrainingArguments.fp16=True steps through a GradScaler, which cannot undo a step taken inside "
            "backward on scaled gradients. Use bf16=True (no scaler), or step_in_backward=False")


class AccumulateUntilSync:
    """A forward pre-hook on the Trainer's model: the backward of a micro-batch accelerate does not
    sync runs inside ``optimizer.accumulating()``, the last one's steps.

    [note: the Trainer's accumulation]
    The Trainer runs every micro-batch alike, ``training_step`` and its backward, and says which
    is the last only through accelerate: before each micro-batch it sets
    ``GradientState().sync_gradients`` (True for the last of its group, also a short group at the
    end of an epoch). No callback runs between that and the micro-batch's backward, but its
    forward does: this hook reads the flag there, and enters ``accumulating()`` for a micro-batch
    that does not sync, leaving it at the forward of one that does.
    """

    def __init__(self, optimizer: AdamWTau):
        self.optimizer = optimizer
        self.block = None  # the accumulating() context while entered

    def __call__(self, module, args) -> None:
        accumulate = not require("accelerate", "hf").state.GradientState().sync_gradients
        if accumulate and self.block is None:
            self.block = self.optimizer.accumulating()
            self.block.__enter__()
        elif not accumulate and self.block is not None:
            block, self.block = self.block, None
            block.__exit__(None, None, None)
