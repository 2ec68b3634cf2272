"""``adamw-tau sweep states|masters``: training-quality checks of the state formats on real text.
TinyGPT on the stdlib corpus (experiments/lm), one pass over a fixed token budget, the same init,
data order, lr and τ in every run: ``states`` (fp32 against 8-bit moments, ours and the anchors)
and ``masters`` (an fp32 master against its bf16-plus-remainder form, and no master). ``training`` holds what both share.
"""
