"""A value must have the type of its default: checked before anything launches.

`danlu sweep lr=abc` would otherwise start Ray and fail every trial with a TypeError. The rule, for
plain overrides and every value a sweep expression can produce:
- a number where the default is a number (an int where it is an int: `epochs=2.5` is refused; an int
  is a fine float: `lr=1`); true/false where it is a bool;
- a scalar (string or number) where the default is a string; a list where it is a list;
- anything where the default is null, an interpolation (`${...}`), or where the key is new (`+key=...`).

Why not Hydra structured configs: danlu's jobs declare their knobs in plain YAML (conf/job/*.yaml), and
a dataclass per job would say each default twice. The defaults are the schema.
"""

from __future__ import annotations

from typing import Any

from orchestrator.errors import BadInput

_MISSING = object()


def _kind(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float"
    if isinstance(v, str):
        return "str"
    if isinstance(v, (list, tuple)):
        return "list"
    if isinstance(v, dict):
        return "dict"
    return "other"


_WANT = {"bool": "true or false", "int": "an integer", "float": "a number", "str": "a string or number",
         "list": "a list, e.g. [0,1,2]", "dict": "a mapping"}
_FITS = {"bool": {"bool"}, "int": {"int"}, "float": {"int", "float"}, "str": {"str", "int", "float", "bool"},
         "list": {"list"}, "dict": {"dict"}}


def default_of(base: dict, key: str) -> Any:
    """The default of a dotted key in the composed defaults (unresolved), or _MISSING."""
    node: Any = base
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def check_value(key: str, value: Any, default: Any, where: str = "") -> None:
    """BadInput naming the key unless `value` has the type of `default`."""
    if default is _MISSING or default is None or value is None:
        return
    if isinstance(default, str) and "${" in default or isinstance(value, str) and "${" in value:
        return
    want, got = _kind(default), _kind(value)
    if want in _FITS and got not in _FITS[want]:
        raise BadInput(f"{where or key}={value!r}: {key} takes {_WANT[want]} (its default is {default!r}).")


def check_overrides(base: dict, values: list[tuple[str, Any]], space_params) -> None:
    """Plain overrides (key, parsed value) and the sweep space's values against the composed defaults."""
    for key, value in values:
        check_value(key, value, default_of(base, key))
    for p in space_params:
        if p.is_group:
            continue
        default = default_of(base, p.key)
        where = f"sweep.space.{p.key}"
        if p.kind in ("choice", "grid"):
            for v in p.values:
                check_value(p.key, v, default, where)
        else:
            is_int = p.kind in ("randint", "lograndint")
            if _kind(default) == "int" and not is_int:
                raise BadInput(f"{where}={p.expr}: {p.key} takes an integer (its default is {default!r}); "
                               f"sample integers with int({p.expr}).")
            check_value(p.key, p.low, default, where)
