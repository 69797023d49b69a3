"""Parts that multiply (searchers, schedulers, report sections): one module each in a package, chosen by name
from a config group. This finds them; each package states, as a Protocol in its __init__, what its modules
provide. A module whose name starts with "_" is a helper of its package, never a part."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path


def names(package: str) -> list[str]:
    """The parts in `package` (orchestrator.search, ...): its modules, less __init__ and its helpers (_name).

    Args:
        package: the dotted name of the package that holds the parts.
    """
    folder = Path(list(importlib.import_module(package).__path__)[0])
    return sorted(p.stem for p in folder.glob("*.py") if not p.stem.startswith("_"))


def load(package: str, name: str, group: str, kind: str):
    """The part's module; a `package` with no part of that name is bad input naming `group`.name.

    Args:
        package: the dotted name of the package that holds the parts.
        name: the part, as the config names it (conf/<group>/<option>.yaml's `name`).
        group: the config group, for the message (search, scheduler, report).
        kind: what a part is called, for the message (searcher, scheduler, section).
    """
    from orchestrator.errors import BadInput

    valid = names(package)
    if name not in valid:
        raise BadInput(f"{group}.name={name}: no such {kind}; valid: {', '.join(valid)} "
                       f"(choose one with {group}=<name>).")
    return importlib.import_module(f"{package}.{name}")


def unmet(module, protocol: type) -> list[str]:
    """What `module` lacks of `protocol` (a Protocol whose methods stand for the module's functions): each
    missing function, or one whose parameters differ by name. Empty when the module provides it all."""
    out = []
    for attr, want in vars(protocol).items():
        if attr.startswith("_") or not callable(want):
            continue
        have = getattr(module, attr, None)
        if not callable(have):
            out.append(f"{attr}: missing")
            continue
        expected = [p for p in inspect.signature(want).parameters if p != "self"]
        got = list(inspect.signature(have).parameters)
        if got[: len(expected)] != expected:
            out.append(f"{attr}({', '.join(got)}): expected {attr}({', '.join(expected)})")
    return out
