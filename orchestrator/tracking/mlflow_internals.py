"""MLflow's non-public parts that danlu uses, in one place; tests/test_mlflow_internals.py names each of them against
the installed MLflow, so that an upgrade that moves one fails there and not in a user's report.

Why: MlflowClient reads a metric's history one run at a time (`get_metric_history`), so a report of a 10,000-trial
sweep would make 10,000 calls. MLflow's own UI reads many runs' histories at once, and so does danlu, through:
- `MlflowClient._tracking_client.store`: the store object behind a client;
- `SqlAlchemyStore.get_metric_history_bulk(run_ids, metric_key, max_results)` (sqlite, PostgreSQL, MySQL): one
  query for many runs;
- the server's `GET /ajax-api/2.0/mlflow/metrics/get-history-bulk` (what the UI's charts call; at most 100 run ids
  and 25,000 values per request), through `mlflow.utils.rest_utils.http_request` with the RestStore's
  `get_host_creds()` (the same credentials and retries as MLflow's own calls).
Where neither is there (another store), `bulk_history` says so (None) and the caller reads run by run.

And `search_runs` of a sweep's children builds full Run objects through SQLAlchemy's ORM (every tag, param and latest
metric an object of its own): 46 % of a 5,309-trial report's 31 s. `child_runs` reads the same columns with plain
queries through the store's session and its table models:
- `SqlAlchemyStore.ManagedSessionMaker()`: the store's own sessions (its engine, its retries);
- `mlflow.store.tracking.dbmodels.models` SqlRun (run_uuid, experiment_id, name, status, start_time, end_time,
  lifecycle_stage), SqlTag / SqlParam (run_uuid, key, value), SqlLatestMetric (run_uuid, key, value, is_nan):
  what Run.to_mlflow_entity reads from them.

And MlflowClient.log_text reads the run from the store (a query) to learn where its artifacts go, once per run
per process: a third of a short trial's MLflow time on sqlite. The store's writer knows it from create_run, and
writes through:
- `mlflow.store.artifact.artifact_repository_registry.get_artifact_repository(artifact_uri, tracking_uri=...)`:
  the repository MlflowClient itself would use for that run (local files, mlflow-artifacts via the server, S3...);
- `ArtifactRepository.log_artifact(local_file, artifact_path)`: public on the repository object.
"""

from __future__ import annotations

import os
import tempfile

DB_CHUNK = 500  # run ids per query (well under SQLite's 32,766 bound variables)
REST_RUNS = 100  # the server's limit of run ids per request
REST_VALUES = 25_000  # ... and of values per answer
BULK_REST = "/ajax-api/2.0/mlflow/metrics/get-history-bulk"


def bulk_history(client, run_ids: list[str], key: str) -> dict[str, list[tuple[int, float]]] | None:
    """run id -> [(step, value)] of metric `key`, ordered by timestamp then step (as logged), for every run in
    `run_ids` (empty for a run without it); read in len(run_ids)/500 queries or len(run_ids)/100 requests. None
    where the client's store offers no bulk read."""
    store = client._tracking_client.store
    out: dict[str, list[tuple[int, float]]] = {rid: [] for rid in run_ids}
    if hasattr(store, "get_metric_history_bulk"):  # a database (RestStore has none: see below)
        for i in range(0, len(run_ids), DB_CHUNK):
            for m in store.get_metric_history_bulk(run_ids[i:i + DB_CHUNK], key, max_results=2**62):
                out[m.run_id].append((m.step, m.value))
        return out
    if hasattr(store, "get_host_creds"):  # an MLflow server
        for i in range(0, len(run_ids), REST_RUNS):
            _rest_chunk(store, run_ids[i:i + REST_RUNS], key, out, client)
        return out
    return None


def _rest_chunk(store, run_ids: list[str], key: str, out: dict, client) -> None:
    """One request for these runs; an answer at the server's cap of values may be cut, so the chunk is halved
    (one run left: its history run by run, which MLflow's client pages itself)."""
    from mlflow.utils.rest_utils import http_request, verify_rest_response

    response = http_request(store.get_host_creds(), BULK_REST, "GET",
                            params={"run_id": run_ids, "metric_key": key, "max_results": REST_VALUES})
    verify_rest_response(response, BULK_REST)
    metrics = response.json().get("metrics", [])
    if len(metrics) >= REST_VALUES:
        if len(run_ids) == 1:
            out[run_ids[0]] = [(m.step, m.value) for m in client.get_metric_history(run_ids[0], key)]
            return
        half = len(run_ids) // 2
        _rest_chunk(store, run_ids[:half], key, out, client)
        _rest_chunk(store, run_ids[half:], key, out, client)
        return
    for m in metrics:
        out[m["run_id"]].append((int(m.get("step", 0)), float(m["value"])))


def log_text(artifact_uri: str, tracking_uri: str, text: str, name: str) -> None:
    """Write `text` as the artifact `name` ("dir/file.txt" allowed) of the run whose artifacts are at
    `artifact_uri`, as MlflowClient.log_text does, without asking the store where that is."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    repo = get_artifact_repository(artifact_uri, tracking_uri=tracking_uri)
    folder, base = os.path.split(name)
    with tempfile.TemporaryDirectory(prefix="danlu-artifact-") as tmp:
        path = os.path.join(tmp, base)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        repo.log_artifact(path, folder or None)


def child_runs(client, experiment_id: str, parent_key: str, parent_id: str) -> list[dict] | None:
    """The active runs of `experiment_id` tagged `parent_key` = `parent_id`, as search_runs would give them (newest
    start first, then by id): dicts of run_id, experiment_id, name, status, params, tags, metrics (latest values,
    NaN kept), start_ms, end_ms. Read in 1 + 4 x len/500 queries. None where the client's store is not a database."""
    store = client._tracking_client.store
    if not hasattr(store, "ManagedSessionMaker"):
        return None
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlParam, SqlRun, SqlTag

    with store.ManagedSessionMaker() as session:
        ids = [r for (r,) in session.query(SqlTag.run_uuid).filter(SqlTag.key == parent_key, SqlTag.value == parent_id)]
        runs: dict[str, dict] = {}
        for i in range(0, len(ids), DB_CHUNK):
            chunk = ids[i:i + DB_CHUNK]
            for rid, exp, name, status, start, end in session.query(
                    SqlRun.run_uuid, SqlRun.experiment_id, SqlRun.name, SqlRun.status, SqlRun.start_time,
                    SqlRun.end_time).filter(SqlRun.run_uuid.in_(chunk), SqlRun.lifecycle_stage == "active",
                                            SqlRun.experiment_id == int(experiment_id)):
                runs[rid] = {"run_id": rid, "experiment_id": str(exp), "name": name or "", "status": status,
                             "params": {}, "tags": {}, "metrics": {}, "start_ms": start, "end_ms": end}
            held = [rid for rid in chunk if rid in runs]
            for model, field in ((SqlTag, "tags"), (SqlParam, "params")):
                for rid, key, value in session.query(model.run_uuid, model.key, model.value).filter(
                        model.run_uuid.in_(held)):
                    runs[rid][field][key] = value
            for rid, key, value, nan in session.query(SqlLatestMetric.run_uuid, SqlLatestMetric.key,
                                                      SqlLatestMetric.value, SqlLatestMetric.is_nan).filter(
                    SqlLatestMetric.run_uuid.in_(held)):
                runs[rid]["metrics"][key] = float("nan") if nan else value
    for run in runs.values():  # as Run.to_mlflow_entity names a run without a name column: by its tag
        run["name"] = run["name"] or run["tags"].get("mlflow.runName", "")
    return sorted(runs.values(), key=lambda r: (-(r["start_ms"] or 0), r["run_id"]))
