"""The numeric checks of user input, in one place: an integer (never a bool) at least N, a number at least N, a
fraction. Each refuses with one message naming the key, what it got and what is valid (BadInput: exit 2).

Why not a structured-config schema: Hydra's would refuse `sweep.num_samples=0` only by type, with OmegaConf's
ValidationError text (full key, object type, a hint about flags), and knows no lower bounds; these checks run
where each value is read, before Ray starts, and say what the value means."""

from __future__ import annotations

from orchestrator.errors import BadInput


def _say(key: str, value, valid: str, note: str) -> BadInput:
    return BadInput(f"{key}={value}: {valid}{f' {note}' if note else ''}.")


def integer(key: str, value, low: int = 0, *, optional: bool = False, note: str = "") -> int | None:
    """`value` if it is an integer >= low (a bool is not one), or None when `optional` and it is None.

    Args:
        key: the config key, as the user writes it (sweep.num_samples), for the message.
        value: what the config holds.
        low: the smallest valid value.
        optional: None is valid (the setting is off).
        note: what the value means, appended to the message (e.g. "(trials run at once)").
    """
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise _say(key, value, f"{'null, or ' if optional else ''}an integer >= {low}", note)
    return value


def number(key: str, value, low: float = 0, *, optional: bool = False, note: str = "") -> float | None:
    """`value` if it is a number (int or float, not bool) >= low; see integer() for the arguments."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value < low:
        raise _say(key, value, f"{'null, or ' if optional else ''}a number >= {low:g}", note)
    return value


def fraction(key: str, value, *, optional: bool = False, note: str = "") -> float | None:
    """`value` if it is a number from 0 to 1; see integer() for the arguments."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise _say(key, value, f"{'null, or ' if optional else ''}a number from 0 to 1", note)
    return value
