"""Which failed trials are tried again, and why one is not.

Tune retries every failure up to FailureConfig(max_failures). A retry helps where the failure was not the job's:
a worker or node that died, a lost actor, a preemption, a stall (a dead data loader, a hung file system). The
job's own error (an exception, a NaN under failure.stop_on_nan, a metric of the wrong type, a step out of order,
its sys.exit, its memory limit) fails the same way from the same checkpoint, so by default it is not retried:

    failure.max_failures       retries of a trial after failures that are not the job's (-1: without end)
    failure.retry_job_errors   retries after the job's own errors (default 0)

and a failure at the same step with the same error as the failure before it is not retried either (a stall, or a
process that exits, at the same step twice). Tune is given the sum as its limit; this policy, asked each time
Tune puts a failed trial back (the scheduler's on_trial_add: orchestrator/scheduler/__init__.py), says which
retries go ahead. Tune has no per-error retry rule, hence this module.
"""

from __future__ import annotations

from dataclasses import dataclass

INFRA, JOB, STALLED = "infrastructure", "job", "stalled"  # the kinds of failure
# words of Ray's errors for a process or node that went away (not the job's exception)
_GONE = ("actordiederror", "rayactorerror", "worker died", "node died", "worker process has died", "actor is dead",
         "nodedied", "actorunavailableerror", "outofmemoryerror", "the actor died", "preempted")


@dataclass(frozen=True)
class Failure:
    kind: str  # INFRA, JOB or STALLED
    step: int | None  # the trial's last reported step when it failed
    error: str  # the error's last line


def tune_limit(max_failures: int, retry_job_errors: int) -> int:
    """Tune's FailureConfig(max_failures): every retry this policy may allow (-1: without end)."""
    return -1 if max_failures < 0 or retry_job_errors < 0 else max_failures + retry_job_errors


def kind_of(error) -> str:
    """A Tune trial's error (Ray's exception, or its text) as INFRA or JOB: Ray's RayTaskError wraps the job's
    own exception; a RayActorError (or a task error caused by one) is its process or node going away."""
    try:
        from ray.exceptions import RayActorError, RayTaskError

        if isinstance(error, RayActorError):
            return INFRA
        if isinstance(error, RayTaskError):
            return INFRA if isinstance(error.as_instanceof_cause(), RayActorError) else JOB
    except ImportError:  # pragma: no cover - Ray is there wherever Tune failed a trial
        pass
    text = str(error).lower()
    return INFRA if any(w in text for w in _GONE) else JOB


class RetryPolicy:
    """Judges each failure of each trial: retried, or not and why. Its counts live as long as the driver: a resumed
    sweep gives every trial its retries anew (a resume is the user's own decision to try again)."""

    def __init__(self, max_failures: int, retry_job_errors: int = 0):
        self.max_failures, self.retry_job_errors = int(max_failures), int(retry_job_errors)
        self.failures: dict[str, list[Failure]] = {}  # trial_id -> its failures, oldest first
        self.ended: dict[str, tuple[str, str]] = {}  # trial_id -> (outcome, why) of a failure not retried
        self.killed: dict[str, Failure] = {}  # trial_id -> why danlu itself ended its process (a stall)

    def judge(self, trial_id: str, failure: Failure) -> str | None:
        """Record the failure; None if the trial is to be retried, else why not (said on the terminal)."""
        past = self.failures.setdefault(trial_id, [])
        before = past[-1] if past else None
        past.append(failure)
        why: str | None
        if before is not None and before.step == failure.step and before.kind == failure.kind and (
                failure.kind == STALLED or before.error == failure.error):  # a stall's text has its duration
            why = (f"not retried: it failed again at step {failure.step} with the same error; a retry would fail "
                   "the same way")
        elif failure.kind == JOB:
            n, limit = sum(f.kind == JOB for f in past), self.retry_job_errors
            why = None if limit < 0 or n <= limit else (
                "not retried: the job's own error (failure.retry_job_errors="
                f"{limit}{'' if limit == 0 else f', used {limit}'}; it retries them)")
        else:
            n, limit = sum(f.kind != JOB for f in past), self.max_failures
            why = None if limit < 0 or n <= limit else f"not retried: failure.max_failures={limit} used"
        if why is not None:
            self.ended[trial_id] = ("stalled" if failure.kind == STALLED else "failed", why)
        return why

    def retry_of(self, trial_id: str) -> tuple[int, int]:
        """(this retry's number among its kind, that kind's limit) for the terminal's "retry 1 of 2"."""
        past = self.failures.get(trial_id) or []
        kind = past[-1].kind if past else INFRA
        same = [f for f in past if (f.kind == JOB) == (kind == JOB)]
        return len(same), self.retry_job_errors if kind == JOB else self.max_failures


def last_line(text: str) -> str:
    """An error's last line that says something (an exception's type and message)."""
    return next((ln.strip() for ln in reversed(text.strip().splitlines()) if ln.strip()), "trial failed")
