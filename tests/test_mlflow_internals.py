"""MLflow's non-public parts that danlu reads through (orchestrator/tracking/mlflow_internals.py), checked against
the installed MLflow, on a real sqlite store and a real `mlflow server`: an upgrade that moves one fails here, naming
it, instead of in a user's report of a large sweep."""

from __future__ import annotations

import pytest

from orchestrator.tracking import mlflow_internals

pytestmark = pytest.mark.contract


def _runs(client, n: int, steps: int) -> list[str]:
    from mlflow.entities import Metric

    exp = client.create_experiment("bulk")
    ids = []
    for i in range(n):
        rid = client.create_run(exp).info.run_id
        client.log_batch(rid, metrics=[Metric("score", i + s / 10, 1000 + s, s) for s in range(1, steps + 1)])
        ids.append(rid)
    return ids


def test_the_names_it_uses_are_there():
    from mlflow.store.tracking.rest_store import RestStore
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
    from mlflow.tracking import MlflowClient
    from mlflow.utils import rest_utils

    assert hasattr(MlflowClient("sqlite:///:memory:")._tracking_client, "store")
    assert hasattr(SqlAlchemyStore, "ManagedSessionMaker") or "ManagedSessionMaker" in SqlAlchemyStore.__init__.__code__.co_names
    from mlflow.store.tracking.dbmodels import models

    for model, columns in ((models.SqlRun, ("run_uuid", "experiment_id", "name", "status", "start_time", "end_time",
                                            "lifecycle_stage")), (models.SqlTag, ("run_uuid", "key", "value")),
                           (models.SqlParam, ("run_uuid", "key", "value")),
                           (models.SqlLatestMetric, ("run_uuid", "key", "value", "is_nan"))):
        assert all(hasattr(model, c) for c in columns), model
    assert callable(SqlAlchemyStore.get_metric_history_bulk) and not hasattr(RestStore, "get_metric_history_bulk")
    assert "get_host_creds" in RestStore.__init__.__code__.co_varnames
    assert callable(rest_utils.http_request) and callable(rest_utils.verify_rest_response)
    from mlflow.server import handlers

    assert hasattr(handlers, "get_metric_history_bulk_handler")
    assert any(mlflow_internals.BULK_REST.endswith(p.rsplit("/", 2)[-2] + "/" + p.rsplit("/", 1)[-1])
               for p in _rule_paths()), mlflow_internals.BULK_REST


def test_the_artifact_writer_names_are_there():
    import inspect

    from mlflow.store.artifact.artifact_repo import ArtifactRepository
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    assert "tracking_uri" in inspect.signature(get_artifact_repository).parameters
    assert list(inspect.signature(ArtifactRepository.log_artifact).parameters)[1:3] == ["local_file", "artifact_path"]


def _texts_land_where_log_text_puts_them(client, uri: str) -> None:
    import mlflow.artifacts

    run = client.create_run(client.create_experiment("texts"))
    mlflow_internals.log_text(run.info.artifact_uri, uri, "a: 1\n", "config.yaml")
    mlflow_internals.log_text(run.info.artifact_uri, uri, "héllo\n", "logs/output.log")
    client.log_text(run.info.run_id, "b: 2\n", "theirs.yaml")  # MLflow's own, beside them
    listed = {a.path for a in client.list_artifacts(run.info.run_id)} | {
        a.path for a in client.list_artifacts(run.info.run_id, "logs")}
    assert {"config.yaml", "logs/output.log", "theirs.yaml"} <= listed
    load = mlflow.artifacts.load_text
    assert load(f"runs:/{run.info.run_id}/config.yaml") == "a: 1\n"
    assert load(f"runs:/{run.info.run_id}/logs/output.log") == "héllo\n"


def test_a_text_artifact_is_written_where_mlflow_would_write_it(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/m.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # for mlflow.artifacts' runs:/ look-ups
    _texts_land_where_log_text_puts_them(MlflowClient(uri), uri)


def _rule_paths() -> list[str]:
    from mlflow.server import app

    return [r.rule for r in app.url_map.iter_rules()]


def test_a_database_gives_every_runs_history_in_one_read(tmp_path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/m.db")
    ids = _runs(client, 7, 4)
    got = mlflow_internals.bulk_history(client, [*ids, ids[0][::-1]], "score")  # and an id it does not hold
    assert {rid: got[rid] for rid in ids} == {rid: [(m.step, m.value) for m in client.get_metric_history(rid, "score")]
                                              for rid in ids}
    assert got[ids[0][::-1]] == [] and mlflow_internals.bulk_history(client, ids, "nope") == {r: [] for r in ids}


def test_a_server_gives_them_in_requests_of_100_runs_and_halves_a_full_answer(server, monkeypatch):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(server.uri)
    ids = _runs(client, 5, 6)
    want = {rid: [(m.step, m.value) for m in client.get_metric_history(rid, "score")] for rid in ids}
    assert mlflow_internals.bulk_history(client, ids, "score") == want
    monkeypatch.setattr(mlflow_internals, "REST_VALUES", 13)  # 5 runs x 6 values: halved until 2 runs, 12 values
    assert mlflow_internals.bulk_history(client, ids, "score") == want
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    _texts_land_where_log_text_puts_them(client, server.uri)  # through the server's mlflow-artifacts proxy


def test_a_sweeps_children_read_by_columns_are_what_search_runs_gives(tmp_path):
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    from orchestrator.tracking.mlflow_store import MlflowStore

    client = MlflowClient(f"sqlite:///{tmp_path}/m.db")
    exp = client.create_experiment("cols")
    parent, other = (client.create_run(exp).info.run_id for _ in range(2))
    ids = []
    for i in range(7):
        under = other if i == 5 else parent
        run = client.create_run(exp, run_name=f"t{i}" if i != 3 else None, start_time=1000 + (i // 2),
                                tags={"mlflow.parentRunId": under, "danlu.trial": f"t{i:03d}"})
        rid = run.info.run_id
        client.log_batch(rid, metrics=[Metric("score", float("nan") if i == 2 else i + s / 10, 5, s) for s in (1, 2)]
                         + [Metric("loss", 1.0 / (i + 1), 5, 1)], params=[Param("x", str(i)), Param("seed", "0")],
                         tags=[RunTag("danlu.outcome", "completed")])
        if i == 4:
            client.delete_run(rid)  # search_runs gives active runs only
        elif i != 1:
            client.set_terminated(rid, "FINISHED")
        ids.append(rid)
    client.log_metric(ids[0], "score", 9.0, step=0)  # an older step logged later: the latest value stays step 2's
    store = MlflowStore(f"sqlite:///{tmp_path}/m.db", "cols")
    got = mlflow_internals.child_runs(client, exp, "mlflow.parentRunId", parent)
    want = [store._record(r) for r in client.search_runs([exp], f"tags.`mlflow.parentRunId` = '{parent}'")]
    assert len(want) == 5 and [r["run_id"] for r in got] == [r.run_id for r in want]
    for mine, theirs in zip(got, want, strict=True):
        nan = {k for k, v in theirs.metrics.items() if v != v}
        assert {k for k, v in mine["metrics"].items() if v != v} == nan
        assert {k: v for k, v in mine["metrics"].items() if k not in nan} == {
            k: v for k, v in theirs.metrics.items() if k not in nan}
        assert (mine["run_id"], mine["experiment_id"], mine["name"], mine["status"], mine["params"], mine["tags"],
                mine["start_ms"], mine["end_ms"]) == (theirs.run_id, theirs.experiment_id, theirs.name, theirs.status,
                                                      theirs.params, theirs.tags, theirs.start_ms, theirs.end_ms)
    assert [r.run_id for r in store.trial_runs(parent, exp)] == [r.run_id for r in want]


def test_mlflows_telemetry_thread_does_not_run_in_a_driver(tmp_path):
    import subprocess
    import sys

    code = ("import threading\n"
            "from orchestrator.tracking.mlflow_store import MlflowStore\n"
            f"s = MlflowStore('sqlite:///{tmp_path}/m.db', 'danlu')\n"
            "from mlflow.tracking import MlflowClient\n"
            "c = s.mlf; r = c.create_run(s.experiment_id()); c.log_metric(r.info.run_id, 'x', 1.0)\n"
            "c.set_terminated(r.info.run_id)\n"
            "print(sorted(t.name for t in threading.enumerate()))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={k: v for k, v in __import__("os").environ.items() if k != "MLFLOW_DISABLE_TELEMETRY"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Telemetry" not in r.stdout, r.stdout
