"""The package's layers, checked and drawn: ``python docs/architecture.py`` writes
docs/architecture.png and prints any import that breaks the rules; tests/test_architecture.py
runs the same check in CI.

Rules: a module imports only from its own layer or the layers below it (LAYERS, bottom
first), no two modules import each other through any path, and no name starting with an
underscore is imported from another module of ours.
"""
from __future__ import annotations

import ast
import os
import sys
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# bottom first: (layer, the package folder it is, what it is for)
LAYERS = [
    ("formats", "adamw_tau/formats", "state formats on the bits: master remainders, 8-bit blockwise codes"),
    ("core", "adamw_tau/core", "the contract: host scalars, rounding bits, the reference step, τ"),
    ("kernels", "triton_kernels", "the Triton kernel and its launcher (the C++/CUDA ones are csrc/)"),
    ("launch", "adamw_tau/launch", "tracked state, tables, buckets, step scalars, backends, ops, the build"),
    ("optim", "adamw_tau/optim", "AdamWTau, its checks, step plan and checkpoints"),
    ("scaling", "adamw_tau/scaling", "μP groups, transfer across scales, published runs"),
    ("api", "adamw_tau/__init__.py", "the public names"),
    ("integrations", "adamw_tau/integrations", "Hugging Face, timm, Lightning, torchtitan, DCP (lazy imports)"),
    ("testing", "adamw_tau/testing", "the parity harness the tests and the bench share"),
    ("bench", "adamw_tau/bench", "adamw-tau bench: bandwidth, host cost, their workloads and timing"),
    ("experiments", "adamw_tau/experiments", "adamw-tau sweep: ridge, dataset, width, the LM"),
    ("cli", "adamw_tau/cli.py", "the adamw-tau command"),
]


def _module_name(path: str) -> str:
    rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
    if rel.startswith("triton_kernels"):
        rel = "adamw_tau." + rel  # installed as adamw_tau.triton_kernels
    return rel[: -len(".__init__")] if rel.endswith(".__init__") else rel


def modules() -> dict[str, str]:
    """Every module of the package: its dotted name -> its file."""
    out = {}
    for top in ("adamw_tau", "triton_kernels"):
        for dirpath, _, files in os.walk(os.path.join(ROOT, top)):
            for f in files:
                if f.endswith(".py"):
                    path = os.path.join(dirpath, f)
                    out[_module_name(path)] = path
    return out


def layer_of(path: str) -> int:
    rel = os.path.relpath(path, ROOT).replace(os.sep, "/")
    for i, (_, where, _) in enumerate(LAYERS):
        if rel == where or rel.startswith(where + "/"):
            return i
    raise ValueError(f"{rel} belongs to no layer: add it to LAYERS in docs/architecture.py")


def imports(name: str, path: str, known: dict[str, str]) -> list[tuple[str, list[str]]]:
    """The modules of ours that ``name`` imports, each with the names it takes from it."""
    tree = ast.parse(Path(path).read_text())
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names if a.name in known]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            for a in node.names:
                sub = f"{base}.{a.name}"
                if sub in known:
                    out.append((sub, []))
                elif base in known:
                    out.append((base, [a.name]))
    return out


def edges() -> list[tuple[str, str, list[str]]]:
    """(importer, imported, the names it takes) for each pair of modules, once."""
    known = modules()
    pairs: dict[tuple[str, str], list[str]] = {}
    for m, path in known.items():
        for target, names in imports(m, path, known):
            if target != m:
                pairs.setdefault((m, target), []).extend(names)
    return [(a, b, names) for (a, b), names in pairs.items()]


def problems() -> list[str]:
    """Every import that breaks the module doc's rules."""
    known = modules()
    out = []
    graph: dict[str, set[str]] = {m: set() for m in known}
    for src, dst, names in edges():
        graph[src].add(dst)
        if layer_of(known[dst]) > layer_of(known[src]):
            out.append(f"{src} imports {dst}, a layer above it ({LAYERS[layer_of(known[dst])][0]})")
        out += [f"{src} imports the private name {n} from {dst}" for n in names if n.startswith("_")]
    # circles: a module that can reach itself
    for start in graph:
        seen, todo = set(), list(graph[start])
        while todo:
            m = todo.pop()
            if m == start:
                out.append(f"{start} is in an import circle")
                break
            if m not in seen:
                seen.add(m)
                todo += graph[m]
    return out


def draw(path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    known = modules()
    rows: dict[int, list[str]] = {}
    for m in sorted(known):
        rows.setdefault(layer_of(known[m]), []).append(m)
    pos = {}
    for li, names in rows.items():
        for j, m in enumerate(names):
            pos[m] = ((j + 0.5) / len(names), li)
    fig, ax = plt.subplots(figsize=(17, 11))
    for src, dst, _ in edges():
        (x0, y0), (x1, y1) = pos[src], pos[dst]
        ax.annotate("", xy=(x1, y1 + 0.12), xytext=(x0, y0 - 0.12),
                    arrowprops=dict(arrowstyle="->", color="#8aa", lw=0.6, alpha=0.7))
    for m, (x, y) in pos.items():
        lines = len(Path(known[m]).read_text().splitlines())
        parts = m.split(".")
        label = ".".join(parts[2:]) or parts[-1] if len(parts) > 2 else (m if m == "adamw_tau" else parts[-1])
        ax.text(x, y, f"{label}\n{lines} lines", ha="center", va="center", fontsize=6,
                bbox=dict(boxstyle="round", fc="#eef4fb", ec="#557"))
    for li, (name, _, what) in enumerate(LAYERS):
        ax.text(-0.02, li, f"{name}\n{what}", ha="right", va="center", fontsize=7.5, wrap=True)
    ax.set_xlim(-0.35, 1.02)
    ax.set_ylim(-0.7, len(LAYERS) - 0.3)
    ax.axis("off")
    n_edges, bad = len(edges()), problems()
    ax.set_title(f"adamw_tau: {len(known)} modules on {len(LAYERS)} layers, {n_edges} imports (arrows point "
                 f"at what is imported), {len(bad)} breaking the rules", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    bad = problems()
    draw(os.path.join(ROOT, "docs", "architecture.png"))
    print(f"{len(modules())} modules, {len(edges())} imports; wrote docs/architecture.png")
    print("\n".join(bad) if bad else "no circles, no imports up a layer, no private names imported")
    sys.exit(1 if bad else 0)
