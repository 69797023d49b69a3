"""The supervisor of a submitted sweep: a Ray job of its own (no CPU) on the cluster that submits the sweep's
driver as a second Ray job, and resubmits it when it dies.

Why here: Ray Jobs are never retried, and the login node that submitted the sweep may be gone for the
night; a job on the cluster outlives both. The resubmitted driver runs the same `danlu sweep ...` command,
which finds the sweep's saved state in its storage and restores it (same trials, same MLflow runs). Each
driver learns its attempt number and why the previous one ended (DANLU_* variables), and records them in
the sweep's MLflow parent run (tags danlu.resubmissions, danlu.resubmissionN).

What counts as a death: the driver job ended STOPPED (stopped by the cluster or an admin; `danlu stop` stops
this supervisor first, so a user's stop is never undone), or FAILED other than by the sweep's own verdict.
Exit code 1 (the sweep ran and failed) and 2 (bad input) are verdicts: resubmitting would repeat them.
Anything else (killed by a signal, OOM-killed, lost with its node: no exit code) is resubmitted, up to
submit.resubmits times.
"""

from __future__ import annotations

import shlex
import signal
import time

from orchestrator.remote.cluster_client import connect, submit_job
from orchestrator.remote.submit import ATTEMPT, ROLE, SUPERVISOR, SWEEP

VERDICTS = (1, 2)  # driver exit codes that are the sweep's own outcome, never resubmitted


def supervise(address: str, sup_id: str, overrides: list[str], resubmits: int, grace_s: int,
              poll_s: float = 2.0, extend: str | None = None, top: int | None = None) -> int:
    """The supervisor job's loop: run the sweep's driver as a Ray job, and resubmit it as `danlu resume` when it
    dies other than by the sweep's own verdict or `danlu stop`, up to `resubmits` times; on stop, give the driver
    `grace_s` to save Tune's state. `extend`: the driver is `danlu extend EXTEND [--top TOP] OVERRIDES`, the same
    command each time (an extension's command goes on with the extension it began)."""
    from ray.job_submission import JobStatus

    client = connect(address)
    me = client.get_job_info(sup_id)
    name = (me.metadata or {}).get(SWEEP, "")
    env = dict((me.runtime_env or {}).get("env_vars") or {})
    env["RAY_JOB_STOP_WAIT_TIME_S"] = str(grace_s)  # the driver's time to save Tune's state on a stop
    stopping = []

    def on_stop(signum, frame):  # `danlu stop` (Ray's stop_job sends SIGTERM)
        stopping.append(signum)

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    what = ["extend", extend, *(["--top", str(top)] if top is not None else [])] if extend else ["sweep"]
    command = shlex.join(["python", "-m", "orchestrator", "--config-dir", "conf", *what, *overrides])

    def launch(attempt: int, reason: str) -> str:
        job_id = f"{sup_id}-d{attempt}"
        runtime_env = {**(me.runtime_env or {}), "env_vars": {
            **env, "DANLU_SUBMISSION_ID": sup_id, "DANLU_ATTEMPT": str(attempt), "DANLU_RESUBMIT_REASON": reason,
            # a resubmitted driver waits for the dead one's lock to be given up (a lost node's NFS lock and lease
            # outlive it for a minute or two) instead of exiting 2 at once (orchestrator/storage/lock.py)
            **({"DANLU_LOCK_WAIT_S": "300"} if attempt else {})}}
        submit_job(client, lambda msg: print(f"danlu supervise: {msg}", flush=True), entrypoint=command,
                   submission_id=job_id, runtime_env=runtime_env,
                   metadata={ROLE: "driver", SUPERVISOR: sup_id, SWEEP: name, ATTEMPT: str(attempt)})
        print(f"danlu supervise: driver {job_id}: {command}" + (f" (after: {reason})" if reason else ""), flush=True)
        return job_id

    attempt, driver = 0, launch(0, "")
    while True:
        if stopping:
            print(f"danlu supervise: stopping driver {driver}; it saves the sweep's state (up to {grace_s} s)",
                  flush=True)
            client.stop_job(driver)
            deadline = time.time() + grace_s + 30
            while not client.get_job_info(driver).status.is_terminal() and time.time() < deadline:
                time.sleep(1)
            print(f"danlu supervise: stopped; driver {driver}: {client.get_job_info(driver).status.value}", flush=True)
            return 130
        try:
            info = client.get_job_info(driver)
        except Exception as exc:  # the dashboard busy or restarting: the driver is not known dead; ask again
            print(f"danlu supervise: could not ask for {driver}'s state ({type(exc).__name__}); again in {poll_s:g} s",
                  flush=True)
            time.sleep(poll_s)
            continue
        if not info.status.is_terminal():
            time.sleep(poll_s)
            continue
        code = info.driver_exit_code
        if info.status == JobStatus.SUCCEEDED:
            print(f"danlu supervise: the sweep finished (driver {driver})", flush=True)
            return 0
        if info.status == JobStatus.FAILED and code in VERDICTS:
            print(f"danlu supervise: the sweep ended with exit code {code}: not resubmitted", flush=True)
            return code
        first = (info.message or "").strip().splitlines()[:1]
        reason = f"{driver} {info.status.value}" + (f", exit code {code}" if code is not None else "") + \
            (f": {first[0][:300]}" if first else "")
        if attempt >= resubmits:
            print(f"danlu supervise: {reason}; gave up after {resubmits} resubmission(s) (submit.resubmits)",
                  flush=True)
            return 1
        attempt += 1
        driver = launch(attempt, reason)

