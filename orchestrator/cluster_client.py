"""The one client of a Ray cluster's dashboard, from a login node: its address, Ray's token, the Jobs API and the
state API, each failure one clear message (exit 2). `danlu submit`, `status`, `logs`, `stop`, `list`, the
supervisor on the cluster, and `danlu plan --address` use it; a sweep's own driver never does (it joins Ray itself:
orchestrator/cluster.py)."""

from __future__ import annotations

import os
import re
import time
from contextlib import contextmanager
from pathlib import Path

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


def _token_auth() -> None:
    """Ray's HTTP clients send the token only when RAY_AUTH_MODE=token is set in their own process; `ray start`
    turns that on when it finds a token, and danlu does the same for its client."""
    if "RAY_AUTH_MODE" in os.environ:
        return
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token").expanduser()
    if os.environ.get("RAY_AUTH_TOKEN") or path.is_file():
        os.environ["RAY_AUTH_MODE"] = "token"


def _token_source() -> str:
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "RAY_AUTH_TOKEN"
    return os.environ.get("RAY_AUTH_TOKEN_PATH") or "~/.ray/auth_token"


@contextmanager
def talking_to(address: str):
    """Turn what goes wrong between here and the cluster into one clear message (exit 2)."""
    import requests
    from ray.exceptions import AuthenticationError

    try:
        yield
    except AuthenticationError as exc:
        if "Authentication failed" in str(exc):
            raise BadInput(f"the Ray cluster at {address} rejected the token from {_token_source()}: it is not "
                           "this cluster's token. Set RAY_AUTH_TOKEN to the cluster's token (on the head node: "
                           "`ray get-auth-token`).") from None
        raise BadInput(f"the Ray cluster at {address} requires its authentication token, and none was found. Set "
                       "RAY_AUTH_TOKEN to the cluster's token (on the head node: `ray get-auth-token`), or save it "
                       "in ~/.ray/auth_token.") from None
    except requests.exceptions.RequestException as exc:
        raise BadInput(f"--address {address}: the Ray Jobs API did not answer ({type(exc).__name__}). "
                       "Is the cluster up?") from None


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
    """A JobSubmissionClient, or a clear error within seconds: Ray's client sets no timeout, so an address
    that accepts connections and never answers would hang it; one plain request with a timeout comes first."""
    import urllib.error
    import urllib.request

    _token_auth()
    try:
        urllib.request.urlopen(f"{address}/api/version", timeout=10).close()
    except urllib.error.HTTPError:
        pass  # it answers (a 401 without the token, say): the client below says what it means
    except (urllib.error.URLError, OSError) as exc:
        why = getattr(exc, "reason", exc)
        why = getattr(why, "strerror", None) or str(why) or type(why).__name__
        raise BadInput(f"--address {address}: nothing answers there ({why}). Is the cluster up, and its dashboard "
                       "reachable from here? (ray start --head --dashboard-host=0.0.0.0 --dashboard-port=8265, "
                       "or an ssh tunnel to it)") from None
    from ray.job_submission import JobSubmissionClient

    with talking_to(address):
        try:
            return JobSubmissionClient(address)
        except RuntimeError as exc:  # "Version check returned 404. Jobs API is not supported ..."
            raise BadInput(f"--address {address}: that is not a Ray dashboard with the Jobs API ({exc}).") from None


def dashboard_nodes(address: str, wait_s: float = 30.0) -> dict[str, dict[str, float]]:
    """The alive nodes of the cluster whose dashboard is at `address`, and their resources (Ray's state API). A cluster whose dashboard has just come up can list no
    node for a few seconds (its head has not registered yet): ask again for up to `wait_s` before saying so."""
    from ray.util.state import list_nodes

    deadline = time.monotonic() + wait_s
    while True:
        with talking_to(address):
            nodes = list_nodes(address=address, filters=[("state", "=", "ALIVE")], raise_on_missing_output=False)
        if nodes or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    if not nodes:
        raise BadInput(f"--address {address}: the cluster lists no alive node after {wait_s:g} s. Is it still "
                       "starting? (`ray status` on the head node shows its nodes)")
    return {f"{n.node_ip} ({n.node_id[:8]})": dict(n.resources_total) for n in nodes}
