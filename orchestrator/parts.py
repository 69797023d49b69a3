"""Parts that multiply (searchers, schedulers, report sections): one module each in a package, chosen by name
from a config group. This finds them; each package says what its modules provide."""

from __future__ import annotations

import importlib
from pathlib import Path


def names(package: str, helpers: tuple[str, ...]) -> list[str]:
    """The parts in `package` (orchestrator.search, ...): its modules, less __init__ and its helpers."""
    folder = Path(importlib.import_module(package).__file__).parent
    return sorted(p.stem for p in folder.glob("*.py") if p.stem not in ("__init__", *helpers))


def load(package: str, name: str, helpers: tuple[str, ...], group: str, kind: str):
    """The part's module; a `package` with no part of that name is bad input naming `group`.name."""
    from orchestrator.errors import BadInput

    valid = names(package, helpers)
    if name not in valid:
        raise BadInput(f"{group}.name={name}: no such {kind}; valid: {', '.join(valid)} "
                       f"(choose one with {group}=<name>).")
    return importlib.import_module(f"{package}.{name}")
