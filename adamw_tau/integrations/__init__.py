"""AdamWTau in the trainers people already use, one small module per framework.

    huggingface  transformers' Trainer: a factory for ``optimizer_cls_and_kwargs``
    timm         ``register()`` adds "adamwtau" to timm's optimizer registry
    lightning    ``ClippingMixedPrecision``: fp16 AMP with gradient clipping
    torchtitan   ``OptimizersContainer`` that knows "AdamWTau"
    dcp          a load planner for torch.distributed.checkpoint that lets torch AdamW and
                 AdamWTau checkpoints load into each other

Each module imports its framework only when one of its functions or classes is used, so
``import adamw_tau`` (and importing these modules) never imports a trainer. The recipes
in docs/integrations.md are the code tests/integrations runs.
"""
