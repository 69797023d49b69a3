"""The MLflow Tracker against a real sqlite store (no Ray): runs, nesting, batching, limits."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.tracking import resolve_uri
from orchestrator.tracking.journal import Journal
from orchestrator.tracking.writer import Tracker
from tests.conftest import mlflow_runs

pytestmark = pytest.mark.contract


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


def test_unreachable_store_is_waited_out_and_nothing_is_lost(tmp_path, capsys, monkeypatch):
    """A store that cannot be reached: the writer keeps everything in the journal and never raises;
    a later Tracker on the same storage (a resumed driver) delivers it once MLflow is there."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    tr = Tracker("http://127.0.0.1:9", "danlu", flush_s=0.1, storage=tmp_path, retry_s=0.2)  # nothing on port 9
    tr.open_sweep("s3", {"a": 1}, {}, tmp_path, ["danlu"])
    tr.trial_start("t1", "t001", {}, {"danlu.sweep": "s3"})
    tr.trial_metrics("t1", 1, 1, {"acc": 0.5})
    tr.trial_end("t1", "FINISHED", {}, None, None)
    tr.close_sweep({}, {}, "FINISHED")
    assert tr.close(timeout=3) is False  # not delivered, not lost
    assert "is unreachable" in capsys.readouterr().err
    later = Tracker(f"sqlite:///{tmp_path}/mlflow.db", "danlu", flush_s=0.1, storage=tmp_path)
    assert later.replayed_ops == 5
    later.begin()
    assert later.close()
    client, (parent,), (child,) = mlflow_runs(tmp_path / "mlflow.db", "s3")
    assert parent.info.status == child.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(child.info.run_id, "acc")] == [1]


def test_a_restarted_driver_continues_the_same_runs(tmp_path):
    """A trial's run outlives the driver (found by the trial -> run cache, or by its tags where the cache, written at
    most every few seconds, does not have it yet): same parent, same child, no (key, step) logged twice."""
    db = tmp_path / "mlflow.db"
    first = Tracker(f"sqlite:///{db}", "danlu", flush_s=0.2, storage=tmp_path)
    first.open_sweep("s4", {"a": 1}, {}, tmp_path, ["danlu", "sweep"])
    first.trial_start("t1", "t001", {"lr": "0.1"}, {"danlu.sweep": "s4"})
    first.trial_start("t2", "t002", {"lr": "0.2"}, {"danlu.sweep": "s4"})
    for step in (1, 2, 3):
        first.trial_metrics("t1", step, step, {"acc": step / 10})
    first.close()  # the driver dies here: runs left RUNNING
    second = Tracker(f"sqlite:///{db}", "danlu", flush_s=0.2, storage=tmp_path)
    second.open_sweep("s4", {"a": 1}, {}, tmp_path, ["danlu", "resume", "s4"])
    second.trial_start("t1", "t001", {"lr": "0.1"}, {"danlu.sweep": "s4"})  # restored from step 2
    for step in (3, 4):
        second.trial_metrics("t1", step, 100 + step, {"acc": step / 10})
    second.trial_end("t1", "FINISHED", {"danlu.outcome": "completed"}, None, None)
    second.close_sweep({}, {}, "FINISHED")  # t2 never came back: KILLED
    second.close()
    assert second.errors == []
    client, (parent,), children = mlflow_runs(db, "s4")
    assert parent.info.run_id == first.parent_id == second.parent_id and parent.data.tags["danlu.resumes"] == "1"
    assert parent.info.status == "FINISHED" and second.store.run_ids["t1"] == first.store.run_ids["t1"]
    by_name = {c.info.run_name: c for c in children}
    assert len(children) == 2 and by_name["t001"].info.status == "FINISHED"
    assert by_name["t002"].info.status == "KILLED"
    history = client.get_metric_history(by_name["t001"].info.run_id, "acc")
    assert sorted(m.step for m in history) == [1, 2, 3, 4]
    assert [m.timestamp for m in history if m.step == 3] == [3]  # the first report of step 3 kept
    assert by_name["t001"].data.tags["danlu.steps_replayed"] == "1"


def test_the_trial_run_cache_is_not_rewritten_at_every_start_and_is_whole_after_the_close(tmp_path, monkeypatch):
    """The cache is written whole: at every trial's start that was quadratic in a sweep's trials."""
    import json
    import os
    import time

    from orchestrator.tracking.mlflow_store import MlflowStore

    writes, real = [], os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (writes.append(b) if str(b).endswith(MlflowStore.RUNS) else None,
                                                     real(a, b))[1])
    began = time.monotonic()
    tr = Tracker(f"sqlite:///{tmp_path}/mlflow.db", "danlu", flush_s=0.2, storage=tmp_path)
    tr.open_sweep("s9", {"a": 1}, {}, tmp_path, ["danlu"])
    for i in range(40):
        tr.trial_start(f"t{i}", f"t{i:03d}", {"lr": str(i)}, {"danlu.sweep": "s9"})
    tr.close_sweep({}, {}, "FINISHED")
    assert tr.close()
    took = time.monotonic() - began
    assert json.loads((tmp_path / MlflowStore.RUNS).read_text())["runs"] == tr.store.run_ids
    assert len(tr.store.run_ids) == 40
    assert len(writes) <= 2 + took / MlflowStore.SAVE_S + 1, (len(writes), took)  # the open, the close, the clock
    client, _, children = mlflow_runs(tmp_path / "mlflow.db", "s9")
    assert sorted(c.data.params["lr"] for c in children) == sorted(str(i) for i in range(40))  # each one's, sent with its batch


def test_a_trial_journaled_during_an_outage_is_replayed_into_the_sweep(tmp_path, monkeypatch):
    """Driver 1 opened the sweep, then MLflow went away: a new trial's start and metrics were only
    journaled before it died. Driver 2 replays them before its own open: same parent, same experiment."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    db = f"sqlite:///{tmp_path}/mlflow.db"
    first = Tracker(db, "danlu", flush_s=0.1, storage=tmp_path)
    first.open_sweep("s5", {"a": 1}, {}, tmp_path, ["danlu"])
    assert first.wait_parent() and first.close()
    dark = Tracker("http://127.0.0.1:9", "danlu", flush_s=0.1, storage=tmp_path, retry_s=0.2)  # the outage
    dark.trial_start("t9", "t009", {"lr": "0.1"}, {"danlu.sweep": "s5", "ray.trial_id": "t9"})
    for step in (1, 2, 3):
        dark.trial_metrics("t9", step, step, {"acc": step / 10})
    assert dark.close(timeout=2) is False
    second = Tracker(db, "danlu", flush_s=0.1, storage=tmp_path)
    assert second.replayed_ops == 4
    second.open_sweep("s5", {"a": 1}, {}, tmp_path, ["danlu", "resume", "s5"])
    second.trial_end("t9", "FINISHED", {}, None, None)
    second.close_sweep({}, {}, "FINISHED")
    assert second.close() and second.errors == []
    client, (parent,), (child,) = mlflow_runs(tmp_path / "mlflow.db", "s5")
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id == first.parent_id
    assert child.info.experiment_id == parent.info.experiment_id and child.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(child.info.run_id, "acc")] == [1, 2, 3]


def test_a_restored_trial_never_relogs_a_step_that_waits_in_the_replayed_journal(tmp_path, monkeypatch):
    """MLflow holds steps 1-2 of a trial; step 3 was only journaled (an outage) when the driver died. Driver 2
    replays step 3 into its buffer, then the trial, restored from its step-2 checkpoint, reports 3 again: the
    run must not get a second step 3 (what MLflow holds and what waits in the buffer both count)."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    db = f"sqlite:///{tmp_path}/mlflow.db"
    first = Tracker(db, "danlu", flush_s=0.1, storage=tmp_path)
    first.open_sweep("s6", {"a": 1}, {}, tmp_path, ["danlu"])
    first.trial_start("t1", "t001", {"lr": "0.1"}, {"danlu.sweep": "s6", "ray.trial_id": "t1"})
    for step in (1, 2):
        first.trial_metrics("t1", step, step, {"acc": step / 10})
    assert first.close()
    dark = Tracker("http://127.0.0.1:9", "danlu", flush_s=0.1, storage=tmp_path, retry_s=0.2)  # the outage
    dark.trial_metrics("t1", 3, 3, {"acc": 0.3})
    assert dark.close(timeout=2) is False
    second = Tracker(db, "danlu", flush_s=30, storage=tmp_path)  # no timed flush between replay and restore
    assert second.replayed_ops == 1
    second.open_sweep("s6", {"a": 1}, {}, tmp_path, ["danlu", "resume", "s6"])
    second.trial_start("t1", "t001", {"lr": "0.1"}, {"danlu.sweep": "s6", "ray.trial_id": "t1"})
    for step in (3, 4):
        second.trial_metrics("t1", step, 100 + step, {"acc": step / 10})
    second.trial_end("t1", "FINISHED", {}, None, None)
    second.close_sweep({}, {}, "FINISHED")
    assert second.close() and second.errors == []
    client, _, (child,) = mlflow_runs(tmp_path / "mlflow.db", "s6")
    history = client.get_metric_history(child.info.run_id, "acc")
    assert sorted(m.step for m in history) == [1, 2, 3, 4]
    assert [m.timestamp for m in history if m.step == 3] == [3]  # the first report of step 3 kept


def test_a_resumed_driver_records_itself_even_when_the_first_open_is_replayed(tmp_path):
    """Driver 1's open reached MLflow but not its offset file: driver 2 replays that open (a no-op), then
    records its own resume (count, command, its tags) on the same parent."""
    db = f"sqlite:///{tmp_path}/mlflow.db"
    first = Tracker(db, "danlu", flush_s=0.1, storage=tmp_path)
    first.open_sweep("s7", {"a": 1}, {}, tmp_path, ["danlu", "sweep"])
    assert first.close()
    (tmp_path / Journal.OFFSET).write_text("0")  # died before it recorded that MLflow had the open
    second = Tracker(db, "danlu", flush_s=0.1, storage=tmp_path)
    assert second.replayed_ops == 1
    second.open_sweep("s7", {"a": 1}, {}, tmp_path, ["danlu", "resume", "s7"], {"danlu.resubmissions": "1"})
    second.close_sweep({}, {}, "FINISHED")
    assert second.close() and second.errors == []
    _, (parent,), _ = mlflow_runs(tmp_path / "mlflow.db", "s7")
    assert parent.info.run_id == first.parent_id
    tags = parent.data.tags
    assert tags["danlu.resumes"] == "1" and tags["danlu.command.resume1"] == "danlu resume s7"
    assert tags["danlu.resubmissions"] == "1"


def test_runs_are_found_by_their_tags_whatever_the_map_and_the_offset_say(tmp_path):
    """Driver 1 created the parent and a trial's run, then died before its map and offset said so: driver 2
    replays every operation and adds its own, and still there is one parent and one run for the trial."""
    db = f"sqlite:///{tmp_path}/mlflow.db"
    first = Tracker(db, "danlu", flush_s=0.1, storage=tmp_path, sweep_id="abc123")
    first.open_sweep("s8", {"a": 1}, {}, tmp_path, ["danlu", "sweep"])
    first.trial_start("t1", "t001 lr=0.1", {"lr": "0.1"}, {"danlu.sweep": "s8", "danlu.config_id": "c1"})
    first.trial_metrics("t1", 1, 1, {"acc": 0.1})
    assert first.close()
    (tmp_path / "mlflow_runs.json").unlink()  # the map was never written...
    (tmp_path / Journal.OFFSET).write_text("0")  # ...nor the offset: everything is replayed
    second = Tracker(db, "danlu", flush_s=0.1, storage=tmp_path, sweep_id="abc123")
    assert second.replayed_ops == 3
    second.open_sweep("s8", {"a": 1}, {}, tmp_path, ["danlu", "sweep"])
    second.trial_start("t1", "t001 lr=0.1", {"lr": "0.1"}, {"danlu.sweep": "s8", "danlu.config_id": "c1"})
    second.trial_metrics("t1", 2, 2, {"acc": 0.2})
    second.trial_end("t1", "FINISHED", {}, None, None)
    second.close_sweep({}, {}, "FINISHED", trials={"t1": None})
    assert second.close() and second.errors == []
    client, parents, children = mlflow_runs(tmp_path / "mlflow.db", "s8")
    assert len(parents) == 1 and len(children) == 1
    assert parents[0].data.tags["danlu.sweep_id"] == "abc123" and parents[0].data.tags["danlu.resumes"] == "1"
    assert children[0].info.run_name == "t001 lr=0.1" and children[0].info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(children[0].info.run_id, "acc")] == [1, 2]


def test_a_run_of_a_trial_tune_forgot_is_set_aside_never_deleted_and_said(tmp_path):
    """A trial id given again to another configuration (its first trial was lost with Ray's snapshot), and a
    trial that Tune no longer holds at the end: their runs are kept, tagged danlu.orphaned (the report leaves them
    out), ended (none stays RUNNING), and the writer says so. A run may hold the only copy of a result."""
    db = f"sqlite:///{tmp_path}/mlflow.db"
    tr = Tracker(db, "danlu", flush_s=0.1, storage=tmp_path, sweep_id="s9id")
    tr.open_sweep("s9", {"a": 1}, {}, tmp_path, ["danlu"])
    tr.trial_start("t1", "t001 x=0.1", {}, {"danlu.sweep": "s9", "danlu.config_id": "old", "danlu.seed": "0"})
    tr.trial_metrics("t1", 1, 1, {"acc": 0.5})
    tr.trial_start("t2", "t002 x=0.2", {}, {"danlu.sweep": "s9", "danlu.config_id": "c2", "danlu.seed": "0"})
    tr.trial_end("t2", "FINISHED", {}, None, None)
    tr.trial_start("t1", "t001 x=0.7", {}, {"danlu.sweep": "s9", "danlu.config_id": "new", "danlu.seed": "0"})
    tr.trial_end("t1", "FINISHED", {}, None, None)
    tr.close_sweep({}, {}, "FINISHED", trials={"t1": {"status": "FINISHED", "tags": {}, "log": None}})
    assert tr.close() and tr.errors == []
    client, _, children = mlflow_runs(tmp_path / "mlflow.db", "s9")
    by_name = {c.info.run_name: c for c in children}
    assert set(by_name) == {"t001 x=0.1", "t002 x=0.2", "t001 x=0.7"}  # nothing deleted
    kept = by_name["t001 x=0.7"]
    assert kept.info.status == "FINISHED" and "danlu.orphaned" not in kept.data.tags
    old, gone = by_name["t001 x=0.1"], by_name["t002 x=0.2"]
    assert "given again" in old.data.tags["danlu.orphaned"] and old.info.status == "KILLED"
    assert [m.value for m in client.get_metric_history(old.info.run_id, "acc")] == [0.5]  # its result is kept
    assert "does not hold its trial" in gone.data.tags["danlu.orphaned"] and gone.info.status == "FINISHED"
    assert len(tr.notes) == 2 and all("set aside" in n for n in tr.notes)
    assert {(o["trial"], o["status"]) for o in tr.store.orphans} == {("t1", "RUNNING"), ("t2", "FINISHED")}


def test_a_refused_operation_is_parked_said_and_sent_again_by_the_next_driver(tmp_path, capsys):
    """MLflow refuses a trial's metrics (here: its run was deleted by hand mid-sweep). Nothing is dropped: the
    batch is parked in mlflow_parked.jsonl, the tracker reports it, and the next driver (a resume) sends it
    once the run is back."""
    from mlflow.tracking import MlflowClient

    db = f"sqlite:///{tmp_path}/mlflow.db"
    tr = Tracker(db, "danlu", flush_s=0.1, storage=tmp_path, sweep_id="p1")
    tr.open_sweep("s10", {"a": 1}, {}, tmp_path, ["danlu"])
    tr.trial_start("t1", "t001", {}, {"danlu.sweep": "s10"})
    assert tr.wait_parent()
    client = MlflowClient(db)
    wait = __import__("tests.conftest", fromlist=["wait_for"]).wait_for
    wait(lambda: tr.store.run_ids.get("t1"), timeout=60, what="the trial's run")
    rid = tr.store.run_ids["t1"]
    client.delete_run(rid)
    for step in (1, 2):
        tr.trial_metrics("t1", step, step, {"acc": step / 10})
    tr.close()
    assert tr.errors and tr.parked >= 1
    assert (tmp_path / Journal.PARKED).exists()
    message = tr.unlogged_message("danlu resume s10")
    assert "mlflow_parked.jsonl" in message and "danlu resume s10" in message
    assert "MLflow refused" in capsys.readouterr().err
    client.restore_run(rid)
    again = Tracker(db, "danlu", flush_s=0.1, storage=tmp_path, sweep_id="p1")
    again.open_sweep("s10", {"a": 1}, {}, tmp_path, ["danlu", "resume", "s10"])
    assert again.close() and again.errors == [] and again.parked == 0
    assert Journal(tmp_path).parked() == []
    assert sorted(m.step for m in client.get_metric_history(rid, "acc")) == [1, 2]


def test_a_store_that_can_never_work_is_bad_input_before_anything_launches(tmp_path):
    import pytest

    from orchestrator.errors import BadInput
    from orchestrator.tracking import check_uri

    with pytest.raises(BadInput, match="tracking.uri=ftp://nowhere/x"):
        check_uri("ftp://nowhere/x")
    with pytest.raises(BadInput, match="does not exist"):
        check_uri(f"sqlite:///{tmp_path}/no/such/dir/m.db")
    check_uri(f"sqlite:///{tmp_path}/m.db")
    check_uri("http://127.0.0.1:9")  # a server: reachable or not, that is for the writer to wait out
    tr = Tracker("ftp://nowhere/x", "danlu", flush_s=0.1)  # the writer's own check, past the scheme test
    with pytest.raises(BadInput, match="tracking.uri=ftp://nowhere/x: UnsupportedModelRegistryStoreURIException"):
        tr.check_store(timeout=60)
    tr.close(timeout=5)
    # a database that does not exist (PostgreSQL runs here): MLflow alone would retry for most of an hour
    nodb = Tracker("postgresql+psycopg2://postgres@127.0.0.1:5432/danlu_no_such_database", "danlu", flush_s=0.1)
    with pytest.raises(BadInput, match='database "danlu_no_such_database" does not exist'):
        nodb.check_store(timeout=60)
    nodb.close(timeout=5)
    dark = Tracker("http://127.0.0.1:9", "danlu", flush_s=0.1, retry_s=0.2)  # nothing there yet: an outage
    dark.check_store(timeout=60)
    assert dark._verdict == "outage"
    dark.close(timeout=1)


def test_a_writer_thread_that_dies_is_never_quiet(tmp_path, capsys, monkeypatch):
    from orchestrator.tracking.mlflow_store import MlflowStore

    def boom(self, *a, **k):
        raise SystemExit("simulated crash of the writer")  # not an Exception: escapes every retry

    monkeypatch.setattr(MlflowStore, "metrics", boom)
    tr = Tracker(f"sqlite:///{tmp_path}/mlflow.db", "danlu", flush_s=0.1, storage=tmp_path)
    tr.open_sweep("s11", {"a": 1}, {}, tmp_path, ["danlu"])
    tr.trial_start("t1", "t001", {}, {})
    tr.trial_metrics("t1", 1, 1, {"acc": 0.1})
    from tests.conftest import wait_for

    wait_for(lambda: tr.dead is not None, timeout=60, what="the writer's death")
    assert tr.close(timeout=5) is False
    assert "the MLflow writer stopped" in capsys.readouterr().err
    assert tr.unlogged_message("danlu resume s11")


def test_a_new_sqlite_store_appears_whole_or_not_at_all(tmp_path):
    """MLflow builds a new store's tables in place; a kill meanwhile would leave a half-migrated file that
    MLflow refuses for good. danlu builds it beside, then links it into place."""
    from mlflow.tracking import MlflowClient

    from orchestrator.tracking.mlflow_store import create_sqlite_store

    (tmp_path / ".mlflow.db.999999.creating").write_bytes(b"half a store, from a killed process")
    create_sqlite_store(f"sqlite:///{tmp_path}/mlflow.db")
    assert (tmp_path / "mlflow.db").exists()
    assert not list(tmp_path.glob(f".mlflow.db.{__import__('os').getpid()}.creating"))
    assert MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_experiment_by_name("Default") is not None
    before = (tmp_path / "mlflow.db").stat().st_ino
    create_sqlite_store(f"sqlite:///{tmp_path}/mlflow.db")  # an existing store is left as it is
    assert (tmp_path / "mlflow.db").stat().st_ino == before


def test_nothing_of_an_earlier_drivers_journal_is_sent_before_the_sweep_is_opened(tmp_path):
    """A driver that stops before it opens the sweep (its storage cannot be restored, a second driver, bad input)
    leaves the store as it found it: the backlog waits in the journal for the next driver."""
    db = f"sqlite:///{tmp_path}/mlflow.db"
    dark = Tracker("http://127.0.0.1:9", "danlu", flush_s=0.1, storage=tmp_path, retry_s=0.2)  # nothing reaches it
    dark.open_sweep("s11", {"a": 1}, {}, tmp_path, ["danlu"])
    dark.trial_start("t1", "t001", {}, {"danlu.sweep": "s11"})
    assert dark.close(timeout=3) is False
    refused = Tracker(db, "danlu", flush_s=0.1, storage=tmp_path)
    refused.check_store()  # the store is reached...
    assert refused.close(timeout=10) is False  # ...but nothing is sent: the sweep was never opened
    assert mlflow_runs(tmp_path / "mlflow.db", "s11")[1:] == ([], [])
    later = Tracker(db, "danlu", flush_s=0.1, storage=tmp_path)
    assert later.replayed_ops == 2  # still all there
    later.begin()
    assert later.close()
    _, (parent,), (child,) = mlflow_runs(tmp_path / "mlflow.db", "s11")
    assert child.info.run_name == "t001"
