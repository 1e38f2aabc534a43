"""The package's import graph follows docs/ARCHITECTURE.md's layers (read from its ```layers block):
every import inside ``sparse_rl_jax`` (module level or inside a function) goes to the same layer or
below, so persistence and logging (layer 2) never import the runner (layer 3)."""
import ast
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "sparse_rl_jax")


def declared_layers():
    """{top-level name under sparse_rl_jax: layer} from the doc's ```layers block."""
    text = open(os.path.join(ROOT, "docs", "ARCHITECTURE.md")).read()
    block = re.search(r"```layers\n(.*?)```", text, re.S)
    assert block, "docs/ARCHITECTURE.md has no ```layers block"
    layers = {}
    for line in block.group(1).strip().splitlines():
        level, names = line.split(":")
        for name in names.split(","):
            layers[name.strip()] = int(level)
    return layers


def unit_of(module: str) -> str:
    """'sparse_rl_jax.sparsity.masks' -> 'sparsity'; 'sparse_rl_jax' -> '__init__'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def package_modules():
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                yield rel.removesuffix(".__init__"), path


def imports_of(module: str, path: str):
    """Every sparse_rl_jax module ``module`` imports: ``import a.b``; ``from a import b`` is module
    ``a.b`` when that is a module, else module ``a``; relative imports resolved."""
    modules = {m for m, _ in package_modules()}
    tree = ast.parse(open(path).read(), path)
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for a in node.names:
                out.add(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base)
    return {m for m in out if m == "sparse_rl_jax" or m.startswith("sparse_rl_jax.")}


def test_every_module_has_a_layer():
    layers = declared_layers()
    missing = sorted({unit_of(m) for m, _ in package_modules()} - set(layers))
    assert not missing, f"add these to docs/ARCHITECTURE.md's layers block: {missing}"


def test_imports_go_to_the_same_layer_or_below():
    layers = declared_layers()
    upward = []
    for module, path in package_modules():
        own = layers[unit_of(module)]
        for target in imports_of(module, path):
            unit = unit_of(target)
            if unit in layers and layers[unit] > own and unit != unit_of(module):
                upward.append(f"{module} (layer {own}) imports {target} (layer {layers[unit]})")
    assert not upward, "\n".join(upward)


@pytest.mark.parametrize("module", ["checkpoint", "run_logging"])
def test_persistence_and_logging_sit_below_the_runner(module):
    layers = declared_layers()
    assert layers[module] < min(layers["trainer"], layers["distributed"])
    path = os.path.join(PACKAGE, f"{module}.py")
    reached = {unit_of(t) for t in imports_of(f"sparse_rl_jax.{module}", path)}
    assert not reached & {"trainer", "distributed", "runs"}, reached
