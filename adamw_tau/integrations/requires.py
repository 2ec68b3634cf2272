"""The one import every integration makes: its framework, or an error that says how to get it."""
from __future__ import annotations

import importlib
from types import ModuleType


def require(module: str, extra: str) -> ModuleType:
    """``import module``, or an ImportError naming the pip extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"adamw_tau.integrations needs the {module!r} package, which is not installed; "
                          f"install it with: pip install 'adamw-tau[{extra}]'") from e
