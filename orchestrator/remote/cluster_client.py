"""The one client of a Ray cluster's Jobs API, from a login node: its address and the JobSubmissionClient, each
failure one clear message (exit 2). `danlu submit`, `status`, `logs`, `stop`, `list --address` and the supervisor
on the cluster use it; a sweep's own driver never does (it joins Ray itself: orchestrator/cluster/placement.py)."""

from __future__ import annotations

import re
import time

from orchestrator.cluster.dashboard import answers, talking_to
from orchestrator.errors import BadInput


def resolve_address(flag: str | None, configured: str | None) -> str:
    """The cluster's Jobs API address from --address, else the config's submit.address (RAY_ADDRESS): an http(s)
    URL; bad input for none, `auto` or a Ray Client address."""
    addr = flag or configured
    if not addr:
        raise BadInput("no Ray cluster to talk to: pass --address http://HEAD:8265 (the head node's dashboard, "
                       "which serves the Jobs API), or set RAY_ADDRESS, or submit.address in the config.")
    addr = str(addr).strip().rstrip("/")
    if addr == "auto" or addr.startswith("ray://"):
        raise BadInput(f"--address {addr}: danlu talks to the Ray Jobs API, served by the head node's dashboard: "
                       "an address like http://HEAD:8265.")
    return addr if "://" in addr else "http://" + addr


def submit_job(client, say, **job) -> None:
    """client.submit_job, again after a short wait while the cluster cannot take it yet (a head just started has
    no job agent for a few seconds: "No available agent to submit job, please try again later"; a busy dashboard
    answers 5xx): a sweep must not be lost to a moment. Raises the last error after ~1 minute, and any other
    error (a 4xx: the request itself is wrong) at once."""
    for wait in (1, 2, 4, 8, 16, 32, 0):
        try:
            client.submit_job(**job)
            return
        except RuntimeError as exc:
            if "already exists" in str(exc):  # an earlier try that seemed to fail had gone through
                return
            if not wait or not re.search(r"status code 5\d\d|try again", str(exc)):  # not a passing moment
                raise
            say(f"submitting {job['submission_id']} failed ({' '.join(str(exc).split())[:200]}); again in {wait} s")
            time.sleep(wait)


def connect(address: str):
    """A JobSubmissionClient, or a clear error within seconds (the dashboard is asked first, with a timeout)."""
    answers(address)
    from ray.job_submission import JobSubmissionClient

    with talking_to(address):
        try:
            return JobSubmissionClient(address)
        except RuntimeError as exc:  # "Version check returned 404. Jobs API is not supported ..."
            raise BadInput(f"--address {address}: that is not a Ray dashboard with the Jobs API ({exc}).") from None
