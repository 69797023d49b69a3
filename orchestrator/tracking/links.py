"""Addresses in MLflow's UI for a sweep: what `danlu ui`, the sweep's last lines and the report link to.

Every address opens in MLflow's model-training view from a fresh browser: MLflow 3's UI keeps its GenAI /
model-training toggle in the browser's local storage (`mlflow.workflowType`, GenAI by default) and reads a
`workflowType=machine_learning` query parameter before it.

The runs table's columns (the metric, the hyperparameters, the seed, the outcome) live in the browser's local
storage too; an address carries only a filter and a sort order (`searchFilter`, `orderByKey`, `orderByAsc`). MLflow's
own "share view" does carry them: the whole view as JSON in an experiment tag `mlflow.sharedViewState.<key>`, opened
by `?viewStateShareKey=<key>` (the UI reads it as JSON when it is not compressed). danlu writes one per sweep
(`runs_view`, written by tracking.mlflow_store.share_runs_view) and links to it; without that tag the link falls back to the
filter and sort order alone.
"""

from __future__ import annotations

import hashlib
from urllib.parse import quote, urlencode

from orchestrator import tags as T

LOCAL_UI = "http://127.0.0.1:5000"  # `danlu ui`'s default, for a local (sqlite) store
TRAINING = {"workflowType": "machine_learning"}


def ui_base(tracking_uri: str, port: int | None = None) -> str:
    """Where MLflow's UI for this store is: the tracking server itself, or `danlu ui` on this machine."""
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri.rstrip("/")
    return f"http://127.0.0.1:{port}" if port else LOCAL_UI


def _query(params: dict) -> str:
    return urlencode({**params, **TRAINING}, quote_via=quote)


def _filter(sweep: str) -> str:
    return f"tags.`{T.SWEEP}` = '{sweep}' AND tags.`{T.TRIAL}` LIKE 't%'"  # the sweep's trials, not its parent


def view_key(sweep: str) -> str:
    """The sweep's shared-view key (tag keys allow few characters; a sweep's name may hold any)."""
    return "danlu-" + hashlib.sha1(sweep.encode()).hexdigest()[:12]


def runs_view(sweep: str, metric: str, mode: str, hyperparameters: list[str]) -> dict:
    """The runs table of a sweep's trials as MLflow's shared view holds it: grouped by configuration (a group's row
    holds its seeds' mean; MLflow shows groups expanded, so every trial is a row), best first, with the metric,
    the hyperparameters, the seed, the configuration's id and the outcome as columns."""
    columns = [f"metrics.`{metric}`", *(f"params.`{k}`" for k in hyperparameters if k != "seed"), "params.`seed`",
               f"tags.`{T.OUTCOME}`", f"tags.`{T.CONFIG_ID}`"]
    return {"searchFilter": _filter(sweep), "orderByKey": f"metrics.`{metric}`", "orderByAsc": mode == "min",
            "selectedColumns": columns,
            "groupBy": {"aggregateFunction": "average", "groupByKeys": [{"mode": "tag", "groupByData": T.CONFIG_ID}]}}


def runs_table(base: str, exp_id: str, sweep: str, metric: str | None = None, mode: str = "max",
               shared: bool = False) -> str:
    """The sweep's trials, best first: through its shared view (`shared`: the tag is written), else by filter."""
    if shared:
        return f"{base.rstrip('/')}/#/experiments/{exp_id}/runs?{_query({'viewStateShareKey': view_key(sweep)})}"
    params = {"searchFilter": _filter(sweep)}
    if metric:
        params |= {"orderByKey": f"metrics.`{metric}`", "orderByAsc": "true" if mode == "min" else "false"}
    return f"{base.rstrip('/')}/#/experiments/{exp_id}/runs?{_query(params)}"


def run(base: str, exp_id: str, run_id: str) -> str:
    """The address of a run's page in MLflow's UI, opening in the model-training view."""
    return f"{base.rstrip('/')}/#/experiments/{exp_id}/runs/{run_id}?{_query({})}"


def report(base: str, exp_id: str, run_id: str, name: str = "report.html") -> str:
    """A file of the parent run's report in MLflow's artifact viewer (it shows report.html inline, report.json as
    text)."""
    return f"{base.rstrip('/')}/#/experiments/{exp_id}/runs/{run_id}/artifactPath/report/{name}?{_query({})}"


def compare(base: str, exp_id: str, run_ids: list[str]) -> str:
    """MLflow's page comparing several runs (a configuration's seeds)."""
    import json

    return (f"{base.rstrip('/')}/#/compare-runs?runs={quote(json.dumps(run_ids))}"
            f"&experiments={quote(json.dumps([exp_id]))}&{_query({})}")
