"""A Ray cluster's dashboard, read from a login node: whether it answers, Ray's token, the nodes its state API
lists, each failure one clear message (exit 2). `danlu plan --address`, the preflight's reach check given a
dashboard address, and the cluster client (orchestrator/remote/cluster_client.py) read it through here; a sweep's
own driver joins Ray itself (orchestrator/cluster/placement.py)."""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path

from orchestrator.errors import BadInput


def token_auth() -> None:
    """Ray's HTTP clients send the token only when RAY_AUTH_MODE=token is set in their own process; `ray start`
    turns that on when it finds a token, and danlu does the same for its client. Ray reads it once, where it first
    needs it: a command that reads a sweep's Tune state before it talks to the cluster calls this first."""
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


def answers(address: str) -> None:
    """One plain request with a timeout, with Ray's token turned on: Ray's clients set no timeout, so an address
    that accepts connections and never answers would hang them. BadInput where nothing answers."""
    import urllib.error
    import urllib.request

    token_auth()
    try:
        urllib.request.urlopen(f"{address}/api/version", timeout=10).close()
    except urllib.error.HTTPError:
        pass  # it answers (a 401 without the token, say): the client says what it means
    except (urllib.error.URLError, OSError) as exc:
        why = getattr(exc, "reason", exc)
        why = getattr(why, "strerror", None) or str(why) or type(why).__name__
        raise BadInput(f"--address {address}: nothing answers there ({why}). Is the cluster up, and its dashboard "
                       "reachable from here? (ray start --head --dashboard-host=0.0.0.0 --dashboard-port=8265, "
                       "or an ssh tunnel to it)") from None


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
