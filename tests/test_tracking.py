"""The MLflow Tracker against a real sqlite store (no Ray): runs, nesting, batching, limits."""

from __future__ import annotations

from pathlib import Path

from orchestrator.tracking import Tracker, resolve_uri
from tests.conftest import mlflow_runs


def test_resolve_uri_makes_sqlite_paths_absolute(tmp_path):
    assert resolve_uri("sqlite:///mlflow.db", str(tmp_path)) == f"sqlite:///{tmp_path}/mlflow.db"
    assert resolve_uri("sqlite:////abs/x.db") == "sqlite:////abs/x.db"
    assert resolve_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"


def test_parent_children_metrics_and_artifacts(tmp_path):
    db = tmp_path / "mlflow.db"
    log = tmp_path / "t1.log"
    log.write_text("hello from the trial\n")
    tr = Tracker(f"sqlite:///{db}", "danlu", flush_s=0.2)
    config = {"lr": 0.1, "job": {"model": {"width": 64}}, **{f"k{i}": i for i in range(150)}}  # > 100 params
    tr.open_sweep("s1", config, {"space": {"lr": "interval(0,1)"}}, Path(__file__).parent, ["danlu", "sweep"])
    assert tr.wait_parent()
    tr.trial_start("t1", "t001 lr=0.1", {"lr": "0.1", "seed": "0"}, {"danlu.sweep": "s1", "danlu.seed": "0"})
    tr.trial_meta("t1", {"config": "lr: 0.1\nbatch_size: 64\n", "hostname": "h", "gpu_ids": "1", "metrics": ["acc"]})
    for step in range(1, 1201):  # more than one log_batch's worth of metrics
        tr.trial_metrics("t1", step, 1_000 + step, {"acc": step / 1200})
    tr.trial_end("t1", "FINISHED", {"danlu.stopped_early": "false"}, str(log), None)
    tr.trial_start("t2", "t002 lr=0.2", {"lr": "0.2", "seed": "0"}, {"danlu.sweep": "s1"})
    tr.trial_metrics("t2", 1, 5_000, {"acc": 0.1})
    tr.trial_end("t2", "FAILED", {"danlu.error": "RuntimeError: boom"}, None, "Traceback...\nRuntimeError: boom")
    tr.close_sweep({"best_acc": 1.0}, {"danlu.best_trial": "t001"}, "FINISHED")
    tr.close()
    assert tr.errors == []

    client, parents, children = mlflow_runs(db, "s1")
    assert len(parents) == 1 and len(children) == 2
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.data.metrics["best_acc"] == 1.0
    assert parent.data.params["job.model.width"] == "64" and len(parent.data.params) == 152
    assert parent.data.tags["danlu.command"] == "danlu sweep" and parent.data.tags["danlu.best_trial"] == "t001"
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} == {"config.yaml", "space.yaml"}
    by_name = {c.info.run_name: c for c in children}
    ok, bad = by_name["t001 lr=0.1"], by_name["t002 lr=0.2"]
    assert all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in children)
    assert ok.info.status == "FINISHED" and bad.info.status == "FAILED"
    assert ok.data.params["lr"] == "0.1" and ok.data.params["batch_size"] == "64"
    assert ok.data.tags["danlu.node"] == "h" and ok.data.tags["danlu.gpu_ids"] == "1"
    history = client.get_metric_history(ok.info.run_id, "acc")
    assert sorted(m.step for m in history) == list(range(1, 1201))
    assert {a.path for a in client.list_artifacts(ok.info.run_id)} == {"config.yaml", "output.log"}
    assert "hello from the trial" in Path(client.download_artifacts(ok.info.run_id, "output.log", str(tmp_path))).read_text()
    assert bad.data.tags["danlu.error"] == "RuntimeError: boom"
    assert {a.path for a in client.list_artifacts(bad.info.run_id)} == {"error.txt"}


def test_discard_deletes_the_sweeps_runs(tmp_path):
    db = tmp_path / "mlflow.db"
    tr = Tracker(f"sqlite:///{db}", "danlu", flush_s=0.2)
    tr.open_sweep("s2", {"a": 1}, {}, tmp_path, ["danlu"])
    tr.trial_start("t1", "t001", {}, {"danlu.sweep": "s2"})
    tr.discard()
    tr.close()
    _, parents, children = mlflow_runs(db, "s2")
    assert parents == [] and children == []  # search_runs shows active runs only


def test_unreachable_store_warns_and_never_raises(tmp_path, capsys):
    tr = Tracker("http://127.0.0.1:9", "danlu", flush_s=0.1)  # nothing listens on port 9
    import os

    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    try:
        tr.open_sweep("s3", {"a": 1}, {}, tmp_path, ["danlu"])
        tr.trial_start("t1", "t001", {}, {})
        tr.close(timeout=120)
    finally:
        os.environ.pop("MLFLOW_HTTP_REQUEST_MAX_RETRIES")
    assert tr.errors and "danlu: warning: MLflow" in capsys.readouterr().err
