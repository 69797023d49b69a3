"""A sweep's budget (sweep.budget): GPU-hours, CPU-hours and wall time, each optional. Reaching one stops the sweep
gracefully, as Ctrl-C does: running trials stop at their last checkpoint, Tune saves its state, no trial starts,
and the sweep stays resumable with a larger budget (`danlu resume NAME sweep.budget.gpu_hours=8`).

A trial's cost is its wall time times what it holds: its GPUs (fractions count their fraction) and its CPUs, as
resource-seconds, counted while Tune has it RUNNING. Wall time is the drivers' time in Tune's fit, over every
session of the sweep. What was used is kept in the sweep's storage (danlu/budget.json) across resumes, and logged
to the parent run as metrics (budget_gpu_hours, budget_cpu_hours, budget_wall_hours) as the sweep goes.

An extension (`danlu extend NAME ... sweep.budget.wall_time=2h`) carries a budget of its own: its limits count what
was used since it began (what the sweep had used then is kept in its record: `base`); the metrics stay the sweep's.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from orchestrator.config import checks
from orchestrator.errors import BadInput

FILE = "budget.json"
_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


def wall_seconds(value) -> float | None:
    """sweep.budget.wall_time as seconds: a number of seconds, or a string such as 90s, 30m, 8h, 1.5d; None: none."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value <= 0:
            raise BadInput(f"sweep.budget.wall_time={value}: a positive duration (seconds, or 30m, 8h).")
        return float(value)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(s|m|min|h|d)\s*", str(value))
    if not m or float(m.group(1)) <= 0:
        raise BadInput(f"sweep.budget.wall_time={value}: a positive duration: seconds (3600), or 90s, 30m, 8h, 1.5d.")
    return float(m.group(1)) * _UNITS[m.group(2)]


@dataclass
class Limits:
    gpu_hours: float | None = None
    cpu_hours: float | None = None
    wall_s: float | None = None

    @classmethod
    def of(cls, sweep) -> Limits:
        """sweep.budget's limits, checked (BadInput naming the key)."""
        b = sweep.get("budget") or {}
        for key in ("gpu_hours", "cpu_hours"):
            checks.number(f"sweep.budget.{key}", b.get(key), 0, optional=True, note="(null: no limit)")
        known = {"gpu_hours", "cpu_hours", "wall_time"}
        unknown = set(b) - known
        if unknown:
            raise BadInput(f"sweep.budget.{sorted(unknown)[0]}: not a budget; valid keys are {', '.join(sorted(known))}.")
        return cls(b.get("gpu_hours"), b.get("cpu_hours"), wall_seconds(b.get("wall_time")))

    def any(self) -> bool:
        """Whether any limit is set."""
        return any(v is not None for v in (self.gpu_hours, self.cpu_hours, self.wall_s))


@dataclass
class Used:
    gpu_s: float = 0.0
    cpu_s: float = 0.0
    wall_s: float = 0.0

    @classmethod
    def of(cls, saved) -> Used:
        """Used from its record ({"gpu_s", "cpu_s", "wall_s"}); nothing from a record that is not one."""
        try:
            return cls(float(saved["gpu_s"]), float(saved["cpu_s"]), float(saved["wall_s"]))
        except (KeyError, TypeError, ValueError):
            return cls()

    def as_record(self) -> dict[str, float]:
        """What was used, in seconds, as budget.json and an extension's record keep it."""
        return {"gpu_s": self.gpu_s, "cpu_s": self.cpu_s, "wall_s": self.wall_s}

    def as_metrics(self) -> dict[str, float]:
        """What was used, in hours, as the parent run's metrics."""
        return {"budget_gpu_hours": self.gpu_s / 3600, "budget_cpu_hours": self.cpu_s / 3600,
                "budget_wall_hours": self.wall_s / 3600}


class Meter:
    """What a sweep's trials have used, against its limits; kept in `state_dir`/budget.json. `base`: what the sweep
    had used when the part that runs now began (an extension's), which its limits do not count."""

    def __init__(self, limits: Limits, state_dir: Path, gpu: float, cpu: float, base: Used | None = None):
        self.limits, self.path, self.gpu, self.cpu = limits, Path(state_dir) / FILE, float(gpu), float(cpu)
        self.used = used(state_dir)
        self.base = base or Used()

    def add(self, seconds: float, running: int) -> None:
        """`seconds` of the driver's fit, with `running` trials RUNNING throughout."""
        self.used.wall_s += seconds
        self.used.gpu_s += seconds * running * self.gpu
        self.used.cpu_s += seconds * running * self.cpu

    def counted(self) -> Used:
        """What the limits count: used since the part that runs now began."""
        u, b = self.used, self.base
        return Used(u.gpu_s - b.gpu_s, u.cpu_s - b.cpu_s, u.wall_s - b.wall_s)

    def reached(self) -> str | None:
        """The first limit reached, said with what was used, or None."""
        u, lim = self.counted(), self.limits
        if lim.gpu_hours is not None and self.gpu > 0 and u.gpu_s / 3600 >= lim.gpu_hours:
            return f"sweep.budget.gpu_hours={lim.gpu_hours:g} reached ({u.gpu_s / 3600:.3g} GPU-hours used)"
        if lim.cpu_hours is not None and u.cpu_s / 3600 >= lim.cpu_hours:
            return f"sweep.budget.cpu_hours={lim.cpu_hours:g} reached ({u.cpu_s / 3600:.3g} CPU-hours used)"
        if lim.wall_s is not None and u.wall_s >= lim.wall_s:
            return f"sweep.budget.wall_time reached ({u.wall_s:.0f} s of {lim.wall_s:.0f} s)"
        return None

    def describe(self) -> str:
        """What was used, against each limit set."""
        u, lim, parts = self.counted(), self.limits, []
        if self.gpu > 0 or lim.gpu_hours is not None:
            parts.append(f"{u.gpu_s / 3600:.3g} GPU-hours" + (f" of {lim.gpu_hours:g}" if lim.gpu_hours is not None else ""))
        parts.append(f"{u.cpu_s / 3600:.3g} CPU-hours" + (f" of {lim.cpu_hours:g}" if lim.cpu_hours is not None else ""))
        parts.append(f"{u.wall_s:.0f} s of wall time" + (f" of {lim.wall_s:.0f}" if lim.wall_s is not None else ""))
        return ", ".join(parts)

    def save(self) -> None:
        """Keep what was used (atomically; a disk that cannot take it costs only this record)."""
        from orchestrator.storage.disk import write_json

        write_json(self.path, self.used.as_record())


def used(state_dir: Path) -> Used:
    """What the sweep has used, as its storage keeps it (nothing where the record is new or cut: the parent run's
    metrics still hold it)."""
    try:
        return Used.of(json.loads((Path(state_dir) / FILE).read_text()))
    except (OSError, ValueError):
        return Used()
