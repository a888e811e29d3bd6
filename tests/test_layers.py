"""The package's modules import only from their own layer or the layers below it.

The layers are those of ``docs/architecture.md``: foundation, backends, the transition
engine, the runtime, the services, the edges. An import that runs back up (a backend
importing a service, the runtime importing a consumer) is how a package turns into a
knot; this test names the first one that appears.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "django_presence"

# Rank of each layer, lowest first; a module may import from its rank or below.
LAYERS: dict[str, int] = {
    "foundation": 0,
    "backends": 1,
    "engine": 2,
    "runtime": 3,
    "services": 4,
    "edges": 5,
}
FOUNDATION = {
    "__init__",
    "conf",
    "exceptions",
    "protocol",
    "ids",
    "groups",
    "signals",
    "models",
    "store",
    "metrics",
    "policies",
    "ratelimit",
}


def layer_of(module: str) -> str:
    """The layer of ``module``, a dotted name below ``django_presence``."""
    first = module.split(".")[0]
    if first in FOUNDATION or first == "":
        return "foundation"
    if first == "backends":
        return "backends"
    if first in ("transitions", "delivery", "availability"):
        return "engine"
    if first in ("runtime", "batcher", "grace_sweeps", "occupancy"):
        return "runtime"
    if first == "services":
        return "services"
    return "edges"  # consumers, middleware, routing, admin, receivers, checks, apps...


def modules() -> list[tuple[str, Path]]:
    """Every module of the package, as (dotted name below the package, path)."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        found.append((".".join(parts), path))
    return found


def imports(module: str, path: Path) -> list[str]:
    """The package modules that ``module`` imports, anywhere in the file."""
    package = module.split(".")[:-1] if path.name != "__init__.py" else module.split(".")
    targets = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                if node.module is None:  # from . import a, b: each name is a module
                    targets += [".".join([*base, alias.name]) for alias in node.names]
                    continue
                targets.append(".".join([*base, *node.module.split(".")]))
            elif node.module and node.module.startswith("django_presence"):
                targets.append(node.module.removeprefix("django_presence").lstrip("."))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("django_presence."):
                    targets.append(alias.name.removeprefix("django_presence."))
    return targets


@pytest.mark.parametrize(("module", "path"), modules(), ids=[m for m, _ in modules()])
def test_no_import_runs_up_the_layers(module: str, path: Path) -> None:
    own = LAYERS[layer_of(module)]
    upward = [t for t in imports(module, path) if LAYERS[layer_of(t)] > own]
    assert upward == [], f"{module} ({layer_of(module)}) imports from a higher layer: {upward}"


def test_the_layers_test_sees_the_imports_it_guards() -> None:
    # A check that could not fail would be worthless: these imports exist and are seen.
    found = dict(modules())
    assert "runtime" in imports("services.online", found["services.online"])
    assert "transitions" in imports("runtime", found["runtime"])
    assert layer_of("consumers.user") == "edges"
