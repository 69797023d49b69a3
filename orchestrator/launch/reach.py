"""Whether what a sweep writes to answers and takes writes, before the sweep starts: the tracking store, the sweep's
storage, a Ray cluster's address (with the auth token). The preflight's `reach` check; each function raises
Unreachable with the reason, or returns a short note of what it found."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


class Unreachable(Exception):
    """Why a store, a folder or a cluster cannot be reached or written; `outage`: a server that does not answer
    (it may later), as opposed to one that refuses."""

    def __init__(self, why: str, outage: bool = False, bad_input: bool = False):
        super().__init__(why)
        self.outage, self.bad_input = outage, bad_input


def tracking(uri: str, experiment: str, timeout_s: float = 10.0, kind: str = "mlflow") -> str:
    """A sqlite store: its folder writable and, where the file exists, a write transaction it grants (begun and
    rolled back). A server: its /health answers, and its experiment, where it exists, takes a tag (a write).
    A database URI, or another RunStore than MLflow's (tracking.store): the store class's own checks."""
    from orchestrator.storage.disk import sqlite_path

    if kind != "mlflow":
        from orchestrator.errors import BadInput
        from orchestrator.tracking import store_class

        cls = store_class(kind)
        try:
            cls.check(uri)
        except BadInput as exc:
            raise Unreachable(str(exc), bad_input=True) from None
        why = cls.refuses(uri)
        if why:
            raise Unreachable(f"{uri}: {why}")
        return f"{cls.__name__} at {uri} answers"

    path = sqlite_path(uri)
    if path is not None:
        return _sqlite(Path(path))
    if uri.startswith(("http://", "https://")):
        return _server(uri.rstrip("/"), experiment, timeout_s)
    from orchestrator.errors import BadInput
    from orchestrator.tracking import check_uri

    try:
        check_uri(uri)
    except BadInput as exc:
        raise Unreachable(str(exc), bad_input=True) from None
    from orchestrator.tracking import store_class

    why = store_class().refuses(uri)
    if why:
        raise Unreachable(f"{uri}: {why}")
    return f"{uri.split('://', 1)[0]} store answers"


def _sqlite(path: Path) -> str:
    import sqlite3

    folder = path.parent
    if not folder.is_dir():
        raise Unreachable(f"tracking: the folder {folder} of {path.name} does not exist", bad_input=True)
    _writable(folder, "tracking store's folder")
    if not path.exists():
        return f"MLflow store {path} (new) writable"
    try:
        con = sqlite3.connect(str(path), timeout=5)
        try:
            con.execute("BEGIN IMMEDIATE")
            con.execute("SELECT count(*) FROM sqlite_master").fetchone()
            con.rollback()
        finally:
            con.close()
    except sqlite3.Error as exc:
        raise Unreachable(f"the MLflow store {path} cannot be written ({exc})") from None
    return f"MLflow store {path} writable"


def _server(uri: str, experiment: str, timeout_s: float) -> str:
    import json
    import urllib.error
    import urllib.parse
    import urllib.request

    headers = {"Content-Type": "application/json"}
    if os.environ.get("MLFLOW_TRACKING_TOKEN"):
        headers["Authorization"] = f"Bearer {os.environ['MLFLOW_TRACKING_TOKEN']}"

    def call(path: str, body: dict | None = None):
        req = urllib.request.Request(uri + path, data=None if body is None else json.dumps(body).encode(),
                                     headers=headers, method="GET" if body is None else "POST")
        with urllib.request.urlopen(req, timeout=timeout_s) as r:  # noqa: S310 - the user's own tracking URI
            return json.loads(r.read() or b"{}") if path != "/health" else {}

    try:
        call("/health")
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise Unreachable(f"the MLflow server {uri} does not answer ({reason})", outage=True) from None
    try:
        found = call("/api/2.0/mlflow/experiments/get-by-name?experiment_name=" + urllib.parse.quote(experiment))
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return f"MLflow server {uri} answers (experiment '{experiment}' is made by the sweep's first write)"
        raise Unreachable(f"the MLflow server {uri} refused a read ({exc.code} {exc.reason})") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise Unreachable(f"the MLflow server {uri} failed a read ({exc})") from None
    try:
        call("/api/2.0/mlflow/experiments/set-experiment-tag",
             {"experiment_id": found["experiment"]["experiment_id"], "key": "danlu.preflight", "value": "reachable"})
    except (urllib.error.URLError, OSError, KeyError, ValueError) as exc:
        raise Unreachable(f"the MLflow server {uri} refused a write ({exc})") from None
    return f"MLflow server {uri} answers and takes writes"


def storage(storage_dir: Path, min_free_mb: int) -> str:
    """The nearest folder of the sweep's storage that exists can be written, with storage.min_free_mb free."""
    import shutil

    folder = Path(storage_dir)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        _writable(folder, "sweep's storage")
    except Unreachable as exc:
        raise Unreachable(f"output_dir={Path(storage_dir).parent}: the sweep's storage cannot be created there "
                          f"({exc})", bad_input=True) from None
    free = shutil.disk_usage(folder).free / 2**20
    if free < min_free_mb:
        raise Unreachable(f"{folder} has {free:.0f} MB free, below storage.min_free_mb={min_free_mb}")
    return f"storage {folder} writable ({free / 1024:.1f} GB free)"


def _writable(folder: Path, what: str) -> None:
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".danlu-preflight-"):
            pass
    except OSError as exc:
        raise Unreachable(f"the {what} {folder} cannot be written ({exc.strerror or exc})", bad_input=True) from None


def cluster(cluster_cfg) -> str | None:
    """A cluster address (cluster.address) answers: its nodes are listed, the auth token accepted. None where the
    sweep starts its own Ray."""
    from orchestrator.errors import BadInput

    address = cluster_cfg.get("address")
    if not address:
        return None
    try:
        nodes = nodes_at(str(address))
    except BadInput as exc:
        raise Unreachable(str(exc)) from None
    return f"Ray at {address}: {len(nodes)} node(s)"


def nodes_at(address: str) -> dict[str, dict[str, float]]:
    """The alive nodes of the Ray cluster at `address` and what each offers: a dashboard (http://HEAD:8265, read
    through its state API with the token by the cluster client, orchestrator/cluster/dashboard.py) or a GCS address
    (HEAD:6379: Ray connects, after a TCP check that fails within seconds where nothing listens). BadInput where
    it does not answer or refuses."""
    if address.startswith(("http://", "https://")):
        from orchestrator.cluster.dashboard import answers, dashboard_nodes

        answers(address)
        return dashboard_nodes(address)
    import ray

    from orchestrator.cluster.placement import cluster_nodes, connect

    if not ray.is_initialized():
        connect(address, verbose=False)
        try:
            return cluster_nodes()
        finally:
            ray.shutdown()
    return cluster_nodes()
