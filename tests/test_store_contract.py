"""The RunStore contract (orchestrator/tracking/__init__.py), one suite that every store passes: MLflow's
(`MlflowStore` on a real sqlite database) and the second implementation written for the tests
(`tests/memory_store.py`). A new store is added to STORES and passes it too (as Optuna's storage tests do).

Each test writes through the protocol's own methods, as the writer thread applies the journal (flushing whatever a
store buffers), and reads back through the protocol: what the report, compare and `danlu ui` rely on."""

from __future__ import annotations

import sys
import uuid

import pytest

from orchestrator import tags as T
from orchestrator.errors import BadInput
from orchestrator.tracking import RunRecord, RunStore, SweepRecord, store_class
from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "tests"))  # memory_store, as tracking.store=memory_store:MemoryStore finds it

pytestmark = pytest.mark.contract

STORES = {"mlflow": lambda tmp: f"sqlite:///{tmp}/mlflow.db",
          "memory_store:MemoryStore": lambda tmp: f"memory:///{tmp}/store-{uuid.uuid4().hex}.json"}


@pytest.fixture(params=sorted(STORES))
def make(request, tmp_path):
    """A function that makes a store of the parametrized kind for a sweep id: the same uri each time, so a second
    store of the same sweep id is a restarted driver's."""
    kind = request.param
    cls = store_class(kind)
    uri = STORES[kind](tmp_path)
    cls.check(uri)
    assert cls.refuses(uri) is None

    def new(sweep_id: str = "sweep-1") -> RunStore:
        return cls(uri, "contract", sweep_id, None)

    new.kind = kind
    return new


def _flush(store) -> None:
    for rid in store.pending_runs():
        store.flush(rid)


def _sweep(store, name="night", trials=("t1", "t2"), steps=3) -> None:
    store.open(name, {"lr": 0.1, "job": {"name": "digits"}}, {"space": {"lr": "interval(0,1)"}}, ROOT,
               ["danlu", "sweep"], settings={"job.name": "digits", "sweep.metric": "acc"})
    for n, trial in enumerate(trials):
        store.start(trial, f"{trial} lr=0.{n + 1}", {"lr": f"0.{n + 1}", "seed": "0"},
                    {T.SWEEP: name, T.SEED: "0", T.CONFIG_ID: f"c{n}"})
        store.meta(trial, {"config": {"lr": 0.1 * (n + 1), "seed": 0}, "hostname": "h"})
        for step in range(1, steps + 1):
            store.metrics(trial, step, 1_000 + step, {"acc": step / 10 + n})
        _flush(store)


def test_protocol_names_every_method_each_store_has(make):
    cls = store_class(make.kind)
    wanted = [n for n, v in vars(RunStore).items() if callable(v) and not n.startswith("_")]
    assert len(wanted) >= 25
    assert [n for n in wanted if not callable(getattr(cls, n, None))] == []


def test_a_sweep_written_is_read_back_whole(make):
    store = make()
    _sweep(store)
    store.end("t1", "FINISHED", {T.OUTCOME: "completed"}, None, None)
    store.end("t2", "FAILED", {T.OUTCOME: "failed"}, None, "Traceback...\nRuntimeError: boom")
    store.close_sweep({"best_acc": 1.3}, {"danlu.best_trial": "t2"}, "FINISHED")
    _flush(store)

    parent = store.find_sweep("night")
    assert isinstance(parent, RunRecord) and parent.status == "FINISHED"
    assert parent.tags[T.SWEEP] == "night" and parent.metrics["best_acc"] == pytest.approx(1.3)
    record = store.read_sweep("night")
    assert isinstance(record, SweepRecord) and record.parent.run_id == parent.run_id
    assert record.space == {"space": {"lr": "interval(0,1)"}}
    by_trial = {r.tags[T.TRIAL_ID]: r for r in record.trials}
    assert set(by_trial) == {"t1", "t2"}
    assert by_trial["t1"].status == "FINISHED" and by_trial["t2"].status == "FAILED"
    assert by_trial["t1"].params["lr"] == "0.1" and by_trial["t2"].tags[T.CONFIG_ID] == "c1"
    assert by_trial["t2"].metrics["acc"] == pytest.approx(1.3)  # a metric's latest value
    assert {r.run_id for r in store.trial_runs(parent.run_id)} == {r.run_id for r in record.trials}
    t1 = by_trial["t1"].run_id
    assert store.history(t1, "acc") == [(1, pytest.approx(0.1)), (2, pytest.approx(0.2)), (3, pytest.approx(0.3))]
    both = store.histories([t1, by_trial["t2"].run_id], "acc")
    assert [s for s, _ in both[by_trial["t2"].run_id]] == [1, 2, 3] and store.histories([t1], "nope") == {t1: []}
    assert "lr: 0.1" in store.artifact_text(t1, "config.yaml") and store.artifact_text(t1, "nope.txt") is None
    assert store.get_run(t1).run_id == t1 and store.get_run(uuid.uuid4().hex) is None
    assert all(r.parent_id == parent.run_id for r in record.trials) and parent.parent_id is None
    assert parent.commit  # the project's git commit ("unknown" outside git), what `danlu rerun` compares with
    exp, parents = store.sweeps()
    assert exp == store.experiment_id() and [p.run_id for p in parents] == [parent.run_id]
    assert [p.run_id for p in store.sweeps_of_job("digits")] == [parent.run_id] and store.sweeps_of_job("x") == []


def test_an_unknown_sweep_is_none_or_bad_input_naming_it(make):
    store = make()
    assert store.find_sweep("nosuch") is None
    with pytest.raises(BadInput, match="nosuch"):
        store.read_sweep("nosuch")


def test_every_journaled_operation_is_safe_to_repeat(make):
    """A driver killed between two calls: its successor replays what the journal holds past the confirmed offset."""
    store = make()
    _sweep(store, trials=("t1",))
    _sweep(make(), trials=("t1",))  # open, start, meta and metrics all again, by a new driver's store
    again = make()
    again.open("night", {}, {}, ROOT, ["danlu", "sweep"], replay=True)
    again.start("t1", "t1 lr=0.1", {"lr": "0.1", "seed": "0"}, {T.SWEEP: "night"}, replay=True)
    again.metrics("t1", 3, 1_003, {"acc": 99.0})  # a step it holds: not logged again
    again.end("t1", "FINISHED", {}, None, None)
    again.end("t1", "FINISHED", {}, None, None, replay=True)
    _flush(again)
    record = again.read_sweep("night")
    assert len(record.trials) == 1 and record.trials[0].status == "FINISHED"
    assert again.history(record.trials[0].run_id, "acc") == [(1, pytest.approx(0.1)), (2, pytest.approx(0.2)),
                                                             (3, pytest.approx(0.3))]
    _, parents = again.sweeps()
    assert len(parents) == 1


def test_a_param_keeps_its_first_value_whatever_a_later_start_says(make):
    """A trial started again with other values (PBT's exploit, a retry) keeps its starting values as params."""
    store = make()
    _sweep(store, trials=("t1",))
    store.start("t1", "t1", {"lr": "0.9", "momentum": "0.5"}, {T.SWEEP: "night"})
    _flush(store)
    run = store.read_sweep("night").trials[0]
    assert run.params["lr"] == "0.1" and run.params["momentum"] == "0.5"
    fresh = make("sweep-2")  # nothing sent yet: the first value still waits in the buffer
    fresh.open("day", {}, {}, ROOT, ["danlu", "sweep"])
    fresh.start("t9", "t9", {"lr": "0.1"}, {T.SWEEP: "day"})
    fresh.start("t9", "t9", {"lr": "0.9"}, {T.SWEEP: "day"})
    _flush(fresh)
    assert fresh.read_sweep("day").trials[0].params["lr"] == "0.1"


def test_a_restarted_driver_continues_the_same_parent_by_its_sweep_id_and_another_sweep_id_is_another(make):
    first = make("a")
    _sweep(first, trials=("t1",))
    first.close_sweep({}, {}, "KILLED")
    parent = first.find_sweep("night").run_id
    second = make("a")
    second.open("night", {}, {}, ROOT, ["danlu", "resume", "night"])
    second.start("t2", "t2", {"lr": "0.2", "seed": "0"}, {T.SWEEP: "night"})
    _flush(second)
    assert second.find_sweep("night").run_id == parent and second.find_sweep("night").status == "RUNNING"
    assert {r.tags[T.TRIAL_ID] for r in second.read_sweep("night").trials} == {"t1", "t2"}
    other = make("b")
    other.open("night", {}, {}, ROOT, ["danlu", "sweep"])
    assert other.find_sweep("night").run_id != parent  # the newest sweep of that name


def test_close_ends_every_run_still_running_and_a_pending_report_keeps_the_parent_open(make):
    store = make()
    _sweep(store)
    store.end("t1", "FINISHED", {}, None, None)
    store.close_sweep({"best_acc": 1.0}, {}, "FINISHED", report_pending=True)
    _flush(store)
    record = store.read_sweep("night")
    assert {r.tags[T.TRIAL_ID]: r.status for r in record.trials} == {"t1": "FINISHED", "t2": "KILLED"}
    assert record.parent.status == "RUNNING"
    store.end_parent(record.parent.run_id, "FINISHED", {"danlu.report": "none"})
    assert store.find_sweep("night").status == "FINISHED"


def test_a_report_and_a_later_result_are_attached_to_their_runs(make, tmp_path):
    store = make()
    _sweep(store)
    store.close_sweep({}, {}, "FINISHED", report_pending=True)
    _flush(store)
    parent = store.find_sweep("night").run_id
    folder = tmp_path / "report"
    folder.mkdir()
    (folder / "report.json").write_text('{"verdict": "cannot be decided with 1 seed"}')
    store.attach_report(parent, folder, {"report.configs": 2.0}, {"danlu.verdict": "undecided"}, "FINISHED",
                        "**Verdict:** cannot be decided with 1 seed")
    run = store.get_run(parent)
    assert run.description == "**Verdict:** cannot be decided with 1 seed"  # its page shows it
    assert run.status == "FINISHED" and run.tags["danlu.verdict"] == "undecided"
    assert run.metrics["report.configs"] == 2.0
    assert "cannot be decided" in store.artifact_text(parent, "report/report.json")
    store.attach_result(parent, "compare/verdict.txt", "no difference", {"compare.p": 0.4}, {"danlu.compare": "x"})
    run = store.get_run(parent)
    assert store.artifact_text(parent, "compare/verdict.txt") == "no difference"
    assert run.metrics["compare.p"] == 0.4 and run.tags["danlu.compare"] == "x"


def test_discard_leaves_nothing_of_the_sweep(make):
    store = make()
    _sweep(store)
    _flush(store)
    store.discard()
    assert store.find_sweep("night") is None and store.sweeps()[1] == []


def test_a_refusal_is_not_an_outage_and_only_mlflow_gets_a_shared_view(make):
    cls = store_class(make.kind)
    assert cls.transient(ValueError("bad request")) is False
    store = make()
    _sweep(store)
    _flush(store)
    shared = store.share_view("night", "acc", "max", ["lr"])
    assert shared is (make.kind == "mlflow")  # a store that is not MLflow gets no MLflow links


def test_a_runs_times_are_the_trials_not_the_writes(make):
    """A writer that lags (an outage waited out, a loaded machine) still records when each trial started and ended."""
    store = make()
    store.open("times", {"lr": 0.1}, {"space": {}}, ROOT, ["danlu", "sweep"], settings={})
    store.start("t1", "t1", {"lr": "0.1"}, {T.SWEEP: "times"}, start_ms=1_700_000_000_000)
    store.end("t1", "FINISHED", {}, None, None, end_ms=1_700_000_060_000)
    _flush(store)
    (run,) = store.read_sweep("times").trials
    assert (run.start_ms, run.end_ms) == (1_700_000_000_000, 1_700_000_060_000)
