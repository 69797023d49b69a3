"""A job run in this process for a bounded number of reports, before anything is launched: what `danlu preflight`,
`danlu plan --probe` and `danlu rerun` are made of.

The job gets a ProbeContext (the job contract's ctx): each report is kept with the time it came, a NaN is kept
(not raised: the preflight judges it), and after `reports` reports, or once `enough(values)` holds, the job is
stopped by an exception it cannot catch by accident (a BaseException, like KeyboardInterrupt). What the job prints
is kept, not shown: the caller shows its tail where it matters.

The preflight runs its probes in a Worker: a child process (`python -m orchestrator.launch.probe`) that reads job specs
(JSON lines) and answers each with its Probe, so that the job, torch and a GPU's CUDA context never load in the
sweep's driver. The memory check runs the corner in a fresh one, so that the peak it measures is that
configuration's own.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from orchestrator.trial.ctx import check_metrics, check_step


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

    def __init__(self, probe: Probe, reports: int | None, enough: Callable[[dict], bool] | None = None, start=None,
                 beat: Callable[[], None] | None = None):
        self.probe, self.reports, self.enough, self.start = probe, reports, enough, start
        self._beat = beat  # told of each report (the Worker's child: its parent then knows the job is alive)
        self._t0 = time.monotonic()

    def report(self, step, metrics, checkpoint=None):
        """Keep the report; stop the job once the probe has what it needs."""
        values = check_metrics(step, metrics)
        check_step(self.probe.history[-1][0] if self.probe.history else None, step)
        self.probe.history.append((step, values))
        self.probe.times.append(time.monotonic() - self._t0)
        if self._beat is not None:
            self._beat()
        if (self.reports is not None and len(self.probe.history) >= self.reports) or \
                (self.enough is not None and self.enough(values)):
            raise Enough

    def restore(self):
        """The state to start from (a probe starts fresh: None)."""
        return self.start


def run(job: Callable, cfg, reports: int | None, enough: Callable[[dict], bool] | None = None,
        threads: int | None = None, beat: Callable[[], None] | None = None) -> Probe:
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
            from orchestrator.trial.trainable import call_job

            call_job(job, cfg, ProbeContext(probe, reports, enough, beat=beat))
    except Enough:
        pass
    except SystemExit as exc:  # the job's own sys.exit: a finding, not the probe's end
        probe.error = (f"the job called sys.exit({exc.code if exc.code is not None else ''}) after "
                       f"{len(probe.history)} report(s)")
        probe.trace = traceback.format_exc()
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


@dataclass
class Rule:
    """When a probe has what it needs, as data (it crosses a process boundary): `key` below `below` (the overfit
    check's threshold), or `key` not finite or above `diverge` times its first value (the LR range test's stop)."""

    key: str | None = None
    below: float | None = None
    diverge: float | None = None
    _first: float | None = None

    def __call__(self, values: dict) -> bool:
        """Whether the probe can stop at this report."""
        x = values.get(self.key, math.nan) if self.key else math.nan
        if self.below is not None and x < self.below:
            return True
        if self.diverge is not None:
            if self._first is None and math.isfinite(x):
                self._first = x
            return not math.isfinite(x) or (self._first is not None and x > self.diverge * self._first)
        return False


class Worker:
    """A child process (`python -m orchestrator.launch.probe`) that runs a job's probes one after another: the job, torch
    and a GPU's CUDA context are loaded there, never in the sweep's driver (a driver holding a CUDA context would
    keep memory on a GPU its trials need). One JSON line per probe each way; a child that dies (killed for memory,
    a crash in native code) is the probe's error, and the next probe starts a new one. A job that makes no report
    for `timeout_s` (it hangs: a dead data loader) is the probe's error too, and its child is killed: the child says
    "beat" at each report, and the parent waits that long for the next word."""

    def __init__(self, root: Path, timeout_s: float = 900.0):
        self.root, self.timeout_s = Path(root), timeout_s
        self._proc: subprocess.Popen | None = None
        self._buf = b""  # what the child said past the last line read

    def _start(self):
        import os
        import subprocess

        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            x for x in (str(self.root), os.environ.get("PYTHONPATH", "")) if x))
        self._buf = b""
        self._proc = subprocess.Popen([sys.executable, "-m", "orchestrator.launch.probe"], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    def run(self, config: dict, fn: str, reports: int | None, rule: Rule | None = None,
            threads: int | None = None) -> Probe:
        """Run the job `fn` on the resolved `config` for at most `reports` reports, in the child."""
        if self._proc is None or self._proc.poll() is not None:
            self._start()
        proc = self._proc
        assert proc is not None and proc.stdin and proc.stdout and proc.stderr  # started with three pipes
        spec = {"config": config, "fn": fn, "root": str(self.root), "reports": reports, "threads": threads,
                "rule": None if rule is None else {"key": rule.key, "below": rule.below, "diverge": rule.diverge}}
        beats = 0
        try:
            proc.stdin.write(json.dumps(spec) + "\n")
            proc.stdin.flush()
            while True:
                line = self._next_line(proc.stdout)
                if line is None:  # silent for timeout_s: the job hangs
                    proc.kill()
                    proc.wait()
                    self._proc = None
                    return Probe(error=f"the job made no report for {self.timeout_s:g} s after {beats} report(s): it "
                                       "hangs (failure.stall_s bounds the wait)")
                if line.startswith('{"beat"'):  # a report; or the job loaded ("ready"): the wait starts anew
                    beats += line.startswith('{"beat": 1}')
                    continue
                break
        except (BrokenPipeError, OSError):
            line = ""
        if not line:
            code = proc.wait(timeout=30)
            err = proc.stderr.read()[-4000:]
            self._proc = None
            why = f"killed by signal {-code}" if code < 0 else f"exit {code}"
            return Probe(error=f"the probe's process died ({why})" + (" (out of memory?)" if code == -9 else ""),
                         output=err)
        result = json.loads(line)
        probe = Probe(**{k: v for k, v in result.items() if k != "history"})
        probe.history = [(int(st), dict(v)) for st, v in result["history"]]
        return probe

    def _next_line(self, stdout) -> str | None:
        """The child's next line ("" when it died), or None after timeout_s of silence. Read from the pipe's fd with
        a buffer of its own: a file object's readline may buffer a second line where select cannot see it."""
        import os
        import select

        fd, deadline = stdout.fileno(), time.monotonic() + self.timeout_s
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 1 << 16)
            if not chunk:  # the child is gone
                rest, self._buf = self._buf, b""
                return rest.decode(errors="replace")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode(errors="replace") + "\n"

    def close(self) -> None:
        """End the child (its stdin closed: it exits), killing it if it does not."""
        proc = self._proc
        if proc is None:
            return
        try:
            if proc.stdin is not None:
                proc.stdin.close()
            proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()
        self._proc = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _serve() -> None:
    """`python -m orchestrator.launch.probe`: run each job spec read on stdin (a JSON line), answer each with its Probe
    (a JSON line), with this process's peak memory (resident; torch's CUDA peak where the job used a GPU). Anything
    else written to stdout (a native library's print) goes to stderr: stdout carries the answers only."""
    import os
    import resource

    from omegaconf import OmegaConf

    from orchestrator.trial.trainable import load_job

    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    for line in sys.stdin:
        spec = json.loads(line)
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.reset_peak_memory_stats()
        rule = Rule(**spec["rule"]) if spec.get("rule") else None
        job = load_job(spec["fn"], Path(spec["root"]))
        answers.write('{"beat": 0}\n')  # loaded (imports can take long): the parent's wait is for the job's reports
        answers.flush()
        def beat():
            answers.write('{"beat": 1}\n')
            answers.flush()

        probe = run(job, OmegaConf.create(spec["config"]), spec["reports"], rule, spec.get("threads"), beat)
        probe.peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
            probe.cuda_peak_mb = torch.cuda.max_memory_allocated() / 2**20
        answers.write(json.dumps(asdict(probe)) + "\n")
        answers.flush()


if __name__ == "__main__":
    _serve()
