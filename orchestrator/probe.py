"""A job run in this process for a bounded number of reports, before anything is launched: what `danlu preflight`,
`danlu plan --probe` and `danlu rerun` are made of.

The job gets a ProbeContext (the job contract's ctx): each report is kept with the time it came, a NaN is kept
(not raised: the preflight judges it), and after `reports` reports, or once `enough(values)` holds, the job is
stopped by an exception it cannot catch by accident (a BaseException, like KeyboardInterrupt). What the job prints
is kept, not shown: the caller shows its tail where it matters.

Run as `python -m orchestrator.probe` it reads a job spec (JSON) on stdin and prints the probe's result (JSON),
with the process's peak memory: the preflight's memory check runs the corner of the space in a fresh process so
that what it measures is that configuration's own.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from orchestrator.context import check_metrics


class Enough(BaseException):  # noqa: N818 - a stop, not an error: a job's `except Exception` must not catch it
    """Raised in the job by ProbeContext.report once the probe has what it needs."""


@dataclass
class Probe:
    """What a bounded run of a job gave: its reports (step, values, seconds since the start), why it ended."""

    history: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    times: list[float] = field(default_factory=list)  # seconds from the job's start to each report
    error: str | None = None  # the exception the job raised (its last line), if it did
    trace: str = ""  # its traceback
    output: str = ""  # what the job printed
    seconds: float = 0.0
    peak_rss_mb: float | None = None  # set by a run in its own process
    cuda_peak_mb: float | None = None

    @property
    def keys(self) -> list[str]:
        """The metric names the job reported (from its first report)."""
        return list(self.history[0][1]) if self.history else []

    def series(self, key: str) -> list[float]:
        """The values of `key`, report by report (NaN where a report lacks it)."""
        return [values.get(key, math.nan) for _, values in self.history]

    def step_s(self) -> float | None:
        """Seconds per report once the job runs: the time from the first report to the last over the reports
        between them (the first report carries the start-up: imports, data, model), or the first report's time
        where there is only one."""
        if len(self.times) >= 2:
            return (self.times[-1] - self.times[0]) / (len(self.times) - 1)
        return self.times[0] if self.times else None

    def non_finite(self) -> tuple[int, str, float] | None:
        """The first (step, key, value) that is NaN or infinite, or None."""
        for step, values in self.history:
            for k, v in values.items():
                if not math.isfinite(v):
                    return step, k, v
        return None

    def tail(self, lines: int = 8) -> str:
        """The last lines the job printed, and its traceback's."""
        text = (self.output + self.trace).strip().splitlines()
        return "\n".join(text[-lines:])


class ProbeContext:
    """The job contract's ctx for a probe: keeps every report; stops the job (Enough) after `reports` reports or
    once `enough(values)` says so. restore() gives the state of `start`, for a rerun from a checkpoint (None: a
    fresh start)."""

    def __init__(self, probe: Probe, reports: int | None, enough: Callable[[dict], bool] | None = None, start=None):
        self.probe, self.reports, self.enough, self.start = probe, reports, enough, start
        self._t0 = time.monotonic()

    def report(self, step, metrics, checkpoint=None):
        """Keep the report; stop the job once the probe has what it needs."""
        values = check_metrics(step, metrics)
        self.probe.history.append((step, values))
        self.probe.times.append(time.monotonic() - self._t0)
        if (self.reports is not None and len(self.probe.history) >= self.reports) or \
                (self.enough is not None and self.enough(values)):
            raise Enough

    def restore(self):
        """The state to start from (a probe starts fresh: None)."""
        return self.start


def run(job: Callable, cfg, reports: int | None, enough: Callable[[dict], bool] | None = None,
        threads: int | None = None) -> Probe:
    """Run `job(cfg, ctx)` here for at most `reports` reports (None: to its end). The job's exceptions are kept in
    the Probe (a preflight judges them), not raised; what it prints is kept. `threads`: torch's CPU threads for the
    run, as a trial gets them (put back after)."""
    probe = Probe()
    out = io.StringIO()
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None and threads else None
    t0 = time.monotonic()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            if threads and "torch" in sys.modules:
                sys.modules["torch"].set_num_threads(max(1, int(threads)))
            job(cfg, ProbeContext(probe, reports, enough))
    except Enough:
        pass
    except Exception as exc:  # the job's own failure is the finding
        probe.error = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
        probe.trace = traceback.format_exc()
    finally:
        probe.seconds = time.monotonic() - t0
        probe.output = out.getvalue()[-20000:]
        torch = sys.modules.get("torch")
        if torch is not None and before:
            torch.set_num_threads(before)
    return probe


def run_apart(config: dict, fn: str, root: Path, reports: int, timeout_s: float = 600.0) -> Probe:
    """The same, in a fresh Python process (`python -m orchestrator.probe`), with its peak memory: the resident set
    (ru_maxrss) and, where the job used CUDA, torch's peak allocation. A process that dies (killed for memory)
    is an error here."""
    import os
    import subprocess

    spec = json.dumps({"config": config, "fn": fn, "root": str(root), "reports": reports})
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    try:
        done = subprocess.run([sys.executable, "-m", "orchestrator.probe"], input=spec, capture_output=True,
                              text=True, timeout=timeout_s, env=env, cwd=str(root))
    except subprocess.TimeoutExpired:
        return Probe(error=f"no report within {timeout_s:g} s")
    lines = done.stdout.strip().splitlines()
    try:
        result = json.loads(lines[-1])
    except (IndexError, ValueError):
        why = f"killed by signal {-done.returncode}" if done.returncode < 0 else f"exit {done.returncode}"
        return Probe(error=f"the probe's process ended ({why}) without a result", output=done.stderr[-4000:])
    probe = Probe(**{k: v for k, v in result.items() if k != "history"})
    probe.history = [(int(s), dict(v)) for s, v in result["history"]]
    return probe


def _child() -> None:
    """`python -m orchestrator.probe`: run the job spec on stdin, print the Probe as JSON (last line)."""
    import resource

    from omegaconf import OmegaConf

    from orchestrator.trial import load_job

    spec = json.loads(sys.stdin.read())
    cfg = OmegaConf.create(spec["config"])
    probe = run(load_job(spec["fn"], Path(spec["root"])), cfg, int(spec["reports"]))
    probe.peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        probe.cuda_peak_mb = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(asdict(probe)), flush=True)


if __name__ == "__main__":
    _child()
