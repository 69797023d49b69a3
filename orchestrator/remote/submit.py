"""A sweep on a running Ray cluster, driven from a login node through the Ray Jobs API.

    danlu submit --address http://HEAD:8265 experiment=digits_lr    returns at once with the sweep's id
    danlu status [ID]           trials by state, best so far, elapsed; the driver job's state
    danlu logs [ID] [--follow]  the driver's output (across resubmissions with --follow)
    danlu stop [ID]             stops the sweep for good: its supervisor first, so nothing resubmits it
    danlu list                  the sweeps submitted to that cluster

`submit` validates the sweep here (bad input costs nothing), checks that one trial fits a node of the
cluster, and submits one Ray job: the sweep's supervisor (orchestrator/remote/supervise.py), which submits the
driver (`danlu sweep ...`) as a second job and resubmits it when it dies. ID is the supervisor's
submission id; without it, the newest sweep on the cluster is meant. The project's conf/ and jobs/
travel as the jobs' working directory; danlu itself must be installed on the cluster's nodes.

The address is --address, else submit.address in the config (default: RAY_ADDRESS). Ray's token
authentication stays on: danlu sends the token from RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or
~/.ray/auth_token, as Ray's own clients do.
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

from orchestrator.cluster.dashboard import dashboard_nodes, talking_to, token_auth
from orchestrator.config import checks
from orchestrator.errors import BadInput, SweepFailed
from orchestrator.remote.cluster_client import connect, resolve_address, submit_job

ROLE, SWEEP, SUPERVISOR, ATTEMPT = "danlu.role", "danlu.sweep", "danlu.supervisor", "danlu.attempt"
PROGRESS = re.compile(r"^\[\s*\d+s\] running \d+ .*$")  # orchestrator/run/progress.py's plain line
SUMMARY = re.compile(r"^danlu: (\d+ trials: .*|best .*|interrupted.*|error: .*)$")


def _stage(config_dir: Path, into: Path) -> None:
    """The jobs' working directory: the project's conf/ and jobs/, nothing else (outputs, venvs and stores
    stay behind; Ray's upload limit is small)."""
    junk = shutil.ignore_patterns("__pycache__", "*.pyc", "local")
    shutil.copytree(config_dir, into / "conf", ignore=junk)
    jobs = config_dir.parent / "jobs"
    if jobs.is_dir():
        shutil.copytree(jobs, into / "jobs", ignore=junk)


def driver_overrides(overrides: list[str], p) -> list[str]:
    """What the driver on the cluster composes: the user's overrides, with the values fixed here that must
    not change on the way (the sweep's name, absolute storage and tracking paths) and an existing cluster."""
    from orchestrator.config.space import override

    fixed = ("sweep.name=", "output_dir=", "tracking.uri=", "cluster=", "cluster.")
    kept = [o for o in overrides if not o.lstrip("+~").startswith(fixed)]
    return [*kept, "cluster=remote", override("sweep.name", str(p.cfg.sweep.name)),
            override("output_dir", str(p.storage_dir.parent)), override("tracking.uri", p.tracking_uri)]


def _extension_checked(name: str, overrides: list[str], top: int | None, config_dir: Path):
    """(the plan of the extension of sweep `name`, the extension's own overrides), after the checks `danlu extend`
    makes before it runs anything: a change no extension makes, nothing to add, seeds that drop one are refused
    here (exit 2), not on the cluster. A sweep that has not ended passes: its driver resumes it first."""
    from orchestrator.launch.extension import NotEnded, Request, Target, again, decide, steps
    from orchestrator.launch.plan import plan
    from orchestrator.storage.sweep_files import settings_of

    t = Target.of(name, overrides)
    p = plan(t.extended(), config_dir)
    if again(t.saved, settings_of(p)):
        return p, t.own  # the same extension again (a requeued batch job's): its driver goes on with it, or ends
    own, top = steps(p, t, top)[0]  # more seeds and configurations: the seeds' part is decided first
    try:
        decide(plan(t.with_own(own).extended(), config_dir) if own != t.own else p, Request(own, top), t.saved)
    except NotEnded:
        pass
    return p, t.own


def _slurm_env() -> dict[str, str]:
    """The Slurm allocation the submitting batch script runs in (orchestrator/cluster/slurm.py), carried to the driver. Its
    driver waits up to 5 minutes for the sweep's lock (orchestrator/storage/lock.py): the driver of an allocation that just
    ended (a requeue, a scancel and a new sbatch) can outlive it for a minute, until it finds its Ray gone (under
    proctrack/linuxproc, Slurm's signals miss a process whose parent died first)."""
    env = {k: v for k, v in os.environ.items() if k.startswith("DANLU_SLURM_")}
    if env:
        env["DANLU_LOCK_WAIT_S"] = "300"
    return env


def submit(overrides: list[str], config_dir: Path, address_flag: str | None, out=None, extend: str | None = None,
           top: int | None = None) -> int:
    """`danlu submit`: plan the sweep here (every check), check the cluster can hold a trial, then submit its
    supervisor job, which runs the driver and resubmits it if it dies; prints how to follow it. `extend`: the driver
    is `danlu extend EXTEND [--top TOP] OVERRIDES` (orchestrator/launch/extension.py), checked here first."""
    from orchestrator.cluster.placement import check_fit
    from orchestrator.launch.plan import plan

    out = out or sys.stdout
    if extend is not None:  # the driver is given the extension's own overrides, as `danlu extend` is
        token_auth()  # before the extension's checks read the sweep's Tune state (Ray reads it once)
        p, overrides = _extension_checked(extend, overrides, top, config_dir)
    else:
        p = plan(overrides, config_dir)  # every check on the sweep itself, before the cluster is contacted
    address = resolve_address(address_flag, p.cfg.submit.get("address"))
    resubmits, grace = p.cfg.submit.resubmits, p.cfg.submit.stop_grace_s
    for key, v in (("resubmits", resubmits), ("stop_grace_s", grace)):
        checks.integer(f"submit.{key}", v, 0)
    client = connect(address)
    check_fit(p.need, dashboard_nodes(address))
    name = str(p.cfg.sweep.name)
    with talking_to(address):
        busy = [j for j in client.list_jobs() if (j.metadata or {}).get(ROLE) == "supervisor"
                and (j.metadata or {}).get(SWEEP) == name and not j.status.is_terminal()]
    if busy:
        raise BadInput(f"sweep.name={name}: that sweep is already running on this cluster as "
                       f"{busy[0].submission_id} (danlu status {busy[0].submission_id}).")
    sup_id = f"danlu-{name}-{secrets.token_hex(3)}"
    what = ["--extend", name, *(["--top", str(top)] if top is not None else [])] if extend is not None else []
    command = ["python", "-m", "orchestrator", "supervise", "--address", address, "--id", sup_id,
               "--resubmits", str(resubmits), "--grace", str(grace), *what, "--", *driver_overrides(overrides, p)]
    with tempfile.TemporaryDirectory(prefix="danlu-submit-") as tmp:
        _stage(p.config_dir, Path(tmp))
        with talking_to(address):
            try:
                submit_job(
                    client, lambda msg: print(f"danlu: {msg}", file=sys.stderr, flush=True),
                    entrypoint=shlex.join(command), submission_id=sup_id,
                    runtime_env={"working_dir": tmp,
                                 # `danlu stop` gives the supervisor time to stop the driver gracefully
                                 "env_vars": {"RAY_JOB_STOP_WAIT_TIME_S": str(grace + 60), "PYTHONUNBUFFERED": "1",
                                              **_slurm_env()}},
                    metadata={ROLE: "supervisor", SWEEP: name, "danlu.storage": str(p.storage_dir)})
            except RuntimeError as exc:
                raise SweepFailed(f"the Ray cluster at {address} did not take the sweep for a minute: "
                                  f"{' '.join(str(exc).split())[:300]}. Nothing was launched; submit it again "
                                  "once `ray status` on the head shows the cluster up.") from None
    print(f"danlu: submitted {'an extension of ' if extend is not None else ''}sweep {name} to {address} as {sup_id}",
          file=out)
    print(f"danlu: follow it with `danlu status {sup_id}` or `danlu logs {sup_id} --follow`; it goes on after you "
          f"log out. MLflow: {p.tracking_uri}, experiment '{p.cfg.tracking.experiment}', run '{name}'.", file=out)
    return 0


# -- looking at submitted sweeps -------------------------------------------------------------------------

def _sweeps(jobs: list) -> list:
    return sorted((j for j in jobs if (j.metadata or {}).get(ROLE) == "supervisor"), key=lambda j: j.start_time or 0)


def find_sweep(client, sweep_id: str | None):
    """The supervisor job of sweep `sweep_id` (a submission id or a sweep name; the newest when None)."""
    sweeps = _sweeps(client.list_jobs())
    if sweep_id is None:
        if not sweeps:
            raise BadInput("no danlu sweep has been submitted to this cluster (danlu submit ...).")
        return sweeps[-1]
    for j in reversed(sweeps):  # by name: the newest submission of that sweep
        if j.submission_id == sweep_id or (j.metadata or {}).get(SWEEP) == sweep_id:
            return j
    known = ", ".join(j.submission_id for j in sweeps[-5:]) or "none"
    raise BadInput(f"no danlu sweep {sweep_id} on this cluster (newest: {known}; danlu list shows them all).")


def drivers(jobs: list, sup_id: str) -> list:
    """The driver jobs of a sweep among the cluster's jobs, first attempt first."""
    mine = [j for j in jobs if (j.metadata or {}).get(SUPERVISOR) == sup_id]
    return sorted(mine, key=lambda j: int((j.metadata or {}).get(ATTEMPT, 0)))


def _elapsed(job) -> str:
    if not job.start_time:
        return "-"
    end = job.end_time or time.time() * 1000
    s = int((end - job.start_time) / 1000)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def status(address: str, sweep_id: str | None, out=None) -> int:
    """`danlu status`: the sweep's state, its drivers and its last progress lines (exit 0: said, whatever the
    state)."""
    out = out or sys.stdout
    client = connect(address)
    with talking_to(address):
        sup = find_sweep(client, sweep_id)
        runs = drivers(client.list_jobs(), sup.submission_id)
        logs = client.get_job_logs(runs[-1].submission_id) if runs else ""
    name = (sup.metadata or {}).get(SWEEP)
    print(f"danlu: sweep {name} ({sup.submission_id}): {sup.status.value}, elapsed {_elapsed(sup)}", file=out)
    if runs:
        d = runs[-1]
        again = f", resubmitted {len(runs) - 1}x" if len(runs) > 1 else ""
        code = f" (exit code {d.driver_exit_code})" if d.driver_exit_code not in (None, 0) else ""
        print(f"danlu: driver {d.submission_id}: {d.status.value}{code}{again}", file=out)
    else:
        print("danlu: driver: not submitted yet", file=out)
    lines = logs.splitlines()
    progress = [ln for ln in lines if PROGRESS.match(ln)]
    summary = [ln for ln in lines if SUMMARY.match(ln)]
    print(progress[-1] if progress else "(no trial has reported yet)", file=out)
    for ln in summary[-3:]:
        print(ln, file=out)
    if sup.status.is_terminal() and sup.message and sup.status.value != "SUCCEEDED":
        print(f"danlu: {sup.message.splitlines()[0]}", file=out)
    return 0


def logs(address: str, sweep_id: str | None, follow: bool, out=None) -> int:
    """`danlu logs`: the sweep's driver output, all of it or followed as it comes (-f)."""
    out = out or sys.stdout
    client = connect(address)
    with talking_to(address):
        sup = find_sweep(client, sweep_id)
        if not follow:
            runs = drivers(client.list_jobs(), sup.submission_id)
            print(client.get_job_logs(runs[-1].submission_id) if runs else client.get_job_logs(sup.submission_id),
                  end="", file=out, flush=True)
            return 0
        return _follow(client, sup.submission_id, out)


def _follow(client, sup_id: str, out) -> int:
    """Tail the current driver; when it ends and the supervisor resubmits, go on with the next one."""
    import asyncio
    import logging

    logging.getLogger("ray.dashboard.modules.job.sdk").setLevel(logging.WARNING)  # "WebSocket closed ..."

    async def tail(job_id: str) -> None:
        async for chunk in client.tail_job_logs(job_id):
            print(chunk, end="", file=out, flush=True)

    seen = 0
    while True:
        runs = drivers(client.list_jobs(), sup_id)
        if len(runs) > seen:
            if seen:
                print(f"danlu: --- resubmitted as {runs[seen].submission_id} ---", file=out, flush=True)
            try:
                asyncio.run(tail(runs[seen].submission_id))
            except (RuntimeError, OSError) as exc:  # "WebSocket connection closed unexpectedly": the cluster went
                print(f"danlu: lost the cluster while following {runs[seen].submission_id} ({exc}); `danlu status` "
                      "says where the sweep stands", file=out, flush=True)
                return 1
            seen += 1
            continue
        if client.get_job_info(sup_id).status.is_terminal():
            return 0
        time.sleep(2)


def stop(address: str, sweep_id: str | None, out=None, wait_s: float = 600) -> int:
    """Stop the supervisor (it then stops its driver, which saves Tune's state and marks its runs KILLED);
    whatever driver is still running afterwards is stopped directly."""
    out = out or sys.stdout
    client = connect(address)
    with talking_to(address):
        sup = find_sweep(client, sweep_id)
        if sup.status.is_terminal():
            print(f"danlu: sweep {sup.submission_id} already ended: {sup.status.value}", file=out)
            return 0
        client.stop_job(sup.submission_id)
        deadline = time.time() + wait_s
        while not client.get_job_info(sup.submission_id).status.is_terminal() and time.time() < deadline:
            time.sleep(1)
        for d in drivers(client.list_jobs(), sup.submission_id):
            if not client.get_job_info(d.submission_id).status.is_terminal():
                client.stop_job(d.submission_id)
                while not client.get_job_info(d.submission_id).status.is_terminal() and time.time() < deadline:
                    time.sleep(1)
        runs = drivers(client.list_jobs(), sup.submission_id)
    last = runs[-1] if runs else None
    print(f"danlu: stopped sweep {(sup.metadata or {}).get(SWEEP)} ({sup.submission_id})"
          + (f"; driver {last.submission_id}: {last.status.value}" if last else ""), file=out)
    print(f"danlu: nothing will resubmit it. To continue it later, submit the same sweep again with "
          f"sweep.name={(sup.metadata or {}).get(SWEEP)}: it resumes from its saved state.", file=out)
    return 0


def list_sweeps(address: str, out=None) -> int:
    """`danlu list --address`: the sweeps submitted to the cluster, one line each."""
    out = out or sys.stdout
    client = connect(address)
    with talking_to(address):
        jobs = client.list_jobs()
        sweeps = _sweeps(jobs)
        rows = [(j.submission_id, (j.metadata or {}).get(SWEEP, ""), j.status.value,
                 str(max(0, len(drivers(jobs, j.submission_id)) - 1)), _elapsed(j)) for j in sweeps]
    if not rows:
        print("danlu: no sweeps submitted to this cluster", file=out)
        return 0
    head = ("ID", "SWEEP", "STATUS", "RESUBMITS", "ELAPSED")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    for r in [head, *rows]:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip(), file=out)
    return 0
