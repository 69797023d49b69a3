"""Addresses in MLflow's UI for a sweep: what `danlu ui`, the sweep's last lines and the report link to.

Every address opens in MLflow's model-training view from a fresh browser: MLflow 3's UI keeps its GenAI /
model-training toggle in the browser's local storage (`mlflow.workflowType`, GenAI by default) and reads a
`workflowType=machine_learning` query parameter before it. The runs table takes its filter and sort order from
the address (`searchFilter`, `orderByKey`, `orderByAsc`: the query parameters MLflow's experiment page reads);
MLflow has no address for grouping runs or choosing columns (they live in the browser's local storage), so the
README says how to group by `danlu.config_id` by hand.
"""

from __future__ import annotations

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


def runs_table(base: str, exp_id: str, sweep: str, metric: str | None = None, mode: str = "max") -> str:
    """The experiment's runs, filtered to the sweep's trials (its parent and children share danlu.sweep), best first."""
    params = {"searchFilter": f"tags.`{T.SWEEP}` = '{sweep}'"}
    if metric:
        params |= {"orderByKey": f"metrics.`{metric}`", "orderByAsc": "true" if mode == "min" else "false"}
    return f"{base.rstrip('/')}/#/experiments/{exp_id}/runs?{_query(params)}"


def run(base: str, exp_id: str, run_id: str) -> str:
    return f"{base.rstrip('/')}/#/experiments/{exp_id}/runs/{run_id}?{_query({})}"


def report(base: str, exp_id: str, run_id: str) -> str:
    """The parent run's report, in MLflow's artifact viewer (it shows report.html inline)."""
    return f"{base.rstrip('/')}/#/experiments/{exp_id}/runs/{run_id}/artifactPath/report/report.html?{_query({})}"


def compare(base: str, exp_id: str, run_ids: list[str]) -> str:
    """MLflow's page comparing several runs (a configuration's seeds)."""
    import json

    return (f"{base.rstrip('/')}/#/compare-runs?runs={quote(json.dumps(run_ids))}"
            f"&experiments={quote(json.dumps([exp_id]))}&{_query({})}")
