"""The seams: every plug-in (searcher, scheduler, report section) meets its package's stated protocol; MLflow lives
in the tracking wing alone; nothing outside scheduler/ names a scheduler; a whole sweep runs on a second RunStore
(tests/memory_store.py, no MLflow in the process); the three plug-ins written to prove the seams (search=hyperopt,
scheduler=median, the report's night section) work end to end on a real Ray and a real MLflow store."""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import pytest
from conftest import ROOT, danlu_cli, mlflow_runs

from orchestrator import plugins

PLUGINS = [("orchestrator.search", "Searcher"), ("orchestrator.scheduler", "SchedulerModule"),
           ("orchestrator.report", "SectionModule")]


def _modules():
    return [(pkg, proto, name) for pkg, proto in PLUGINS for name in plugins.names(pkg)]


@pytest.mark.contract
@pytest.mark.parametrize("package, protocol, name", _modules(), ids=[f"{p.rsplit('.', 1)[1]}.{n}" for p, _, n in
                                                                      _modules()])
def test_every_plugin_meets_its_packages_protocol(package, protocol, name):
    import importlib

    pkg = importlib.import_module(package)
    module = importlib.import_module(f"{package}.{name}")
    assert plugins.unmet(module, getattr(pkg, protocol)) == []
    assert module.__doc__ and module.__doc__.strip(), f"{package}.{name} says what it does"


@pytest.mark.contract
def test_a_module_lacking_its_protocol_is_named_with_what_it_lacks():
    import types

    from orchestrator.scheduler import SchedulerModule

    half = types.SimpleNamespace(check=lambda ctx: None, make=lambda sch, seeds, say: None)
    assert plugins.unmet(half, SchedulerModule) == ["make(sch, seeds, say): expected make(ctx)",
                                                  "schedule: missing"]


def test_helpers_are_not_parts_and_every_part_has_its_config_file():
    from orchestrator import report, scheduler, search

    for pkg, group in ((search, "search"), (scheduler, "scheduler")):
        names = pkg.available()
        assert names and not any(n.startswith("_") for n in names)
        options = {p.stem for p in (ROOT / "orchestrator" / "conf" / group).glob("*.yaml")}
        assert set(names) == options, f"orchestrator/conf/{group}/ and orchestrator/{group}/ name the same parts"
    assert "night" in report.available() and "_publish" not in report.available()


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}  # a name may be a module
    return names


def test_mlflow_is_imported_in_the_tracking_wing_alone():
    importers = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "orchestrator").rglob("*.py")
                       if any(n == "mlflow" or n.startswith("mlflow.") for n in _imports(p)))
    assert importers == ["orchestrator/tracking/mlflow_internals.py", "orchestrator/tracking/mlflow_store.py"]


def test_no_module_outside_scheduler_names_a_scheduler():
    from orchestrator import scheduler

    names = set(scheduler.available())
    found = []
    for p in (ROOT / "orchestrator").rglob("*.py"):
        if "scheduler" in p.relative_to(ROOT / "orchestrator").parts:
            continue
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names:
                found.append(f"{p.relative_to(ROOT)}:{node.lineno} {node.value!r}")
    assert found == []


def _memory_sweep(tmp_path, name, *extra):
    dump = tmp_path / "store.json"
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT / "tests" / "import_trace"),
                                          os.environ.get("PYTHONPATH", "")]),
           "DANLU_IMPORT_TRACE": str(tmp_path / "imports.tsv")}
    r = danlu_cli(["sweep", "job=sleep", "sweep=sleep", f"sweep.name={name}", "sweep.num_samples=4", "epochs=4",
                   "epoch_s=0.05", "sweep.search_seed=1", "tracking.store=memory_store:MemoryStore",
                   f"tracking.uri=memory://{dump}", *extra], tmp_path, env=env,
                  own_ray=False)  # the store and the import trace are the driver's: its trials need neither
    return r, dump


@pytest.mark.integration
def test_a_whole_sweep_runs_on_a_second_run_store_with_no_mlflow_in_the_process(tmp_path):
    r, dump = _memory_sweep(tmp_path, "mem", "scheduler=fifo", "sweep.seeds=[0,1]")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    held = json.loads(dump.read_text())
    # the process may import MLflow: Ray Tune's usage telemetry imports its MLflow integration for any sweep with
    # callbacks. No import of it comes from danlu's code: each was made by a file of Ray's
    trace = tmp_path / "imports.tsv"
    importers = {line.split("\t")[1] for line in trace.read_text().splitlines()} if trace.exists() else set()
    assert not any(str(ROOT / "orchestrator") in f for f in importers), importers
    assert held["mlflow_imported"] is False or all(f"{os.sep}ray{os.sep}" in f for f in importers), importers
    runs = held["runs"]
    parents = [x for x in runs.values() if "mlflow.parentRunId" not in x["tags"]]
    children = [x for x in runs.values() if "mlflow.parentRunId" in x["tags"]]
    (parent,) = parents
    assert parent["status"] == "FINISHED" and parent["tags"]["danlu.report"] == "made"
    assert "report/report.json" in parent["artifacts"]
    assert len(children) == 8 and all(c["status"] == "FINISHED" for c in children)  # 4 configurations x 2 seeds
    assert all([s for s, _, _ in c["metrics"]["score"]] == [1, 2, 3, 4] for c in children)  # every step once
    report = json.loads(parent["artifacts"]["report/report.json"])
    assert report["leaderboard"]["rows"] and "Verdict:" in r.stdout
    assert not (tmp_path / "mlflow.db").exists()
    # a store that is not MLflow gets no MLflow links: none on the terminal, none in the report's page
    assert "http://" not in r.stdout and "http://" not in parent["artifacts"]["report/report.html"]
    assert "danlu: its runs are in the memory_store:MemoryStore store" in r.stdout
    # the same sweep on MLflow's store: the same runs, steps and values
    (tmp_path / "mlflow").mkdir()
    same = danlu_cli(["sweep", "job=sleep", "sweep=sleep", "sweep.name=mem", "sweep.num_samples=4", "epochs=4",
                      "epoch_s=0.05", "sweep.search_seed=1", "scheduler=fifo", "sweep.seeds=[0,1]"], tmp_path / "mlflow")
    assert same.returncode == 0, same.stdout[-3000:] + same.stderr[-3000:]
    client, _, mlflow_children = mlflow_runs(tmp_path / "mlflow" / "mlflow.db", "mem")
    on_mlflow = {(c.data.tags["danlu.config_id"], c.data.tags["danlu.seed"]):
                 [(m.step, m.value) for m in sorted(client.get_metric_history(c.info.run_id, "score"),
                                                    key=lambda m: m.step)] for c in mlflow_children}
    in_memory = {(c["tags"]["danlu.config_id"], c["tags"]["danlu.seed"]): [(s, v) for s, v, _ in c["metrics"]["score"]]
                 for c in children}
    assert on_mlflow == in_memory
    again = danlu_cli(["report", "mem", "tracking.store=nope:Nothing"], tmp_path)
    assert again.returncode == 2 and "tracking.store=nope:Nothing: no such store" in again.stderr


@pytest.mark.integration
def test_hyperopt_median_stopping_and_the_night_section_end_to_end(tmp_path):
    """search=hyperopt suggests, scheduler=median stops, and the report's night section lists the trials that
    failed, each as MLflow holds it."""
    args = ["sweep", "job=sleep", "sweep=sleep", "sweep.name=seams", "search=hyperopt", "search.n_initial_points=4",
            "scheduler=median", "scheduler.min_samples_required=2", "sweep.num_samples=8", "epochs=8",
            "epoch_s=0.05", "sweep.search_seed=3", "fail_at=0,6", "x=interval(0,1)"]
    r = danlu_cli(args, tmp_path)
    _, (parent,), children = mlflow_runs(tmp_path / "mlflow.db", "seams")
    failed = sorted(c.data.tags["danlu.trial"] for c in children if c.info.status == "FAILED")
    assert r.returncode == (1 if len(failed) == len(children) else 0), r.stdout[-3000:] + r.stderr[-3000:]
    assert len(children) == 8 and "hyperopt (TPE), 8 configurations" in r.stdout
    assert {c.data.params["fail_at"] for c in children} == {"0", "6"}  # both values suggested
    stopped = [c for c in children if c.data.tags.get("danlu.outcome") == "stopped_early"]
    # a trial asked to fail at epoch 6 failed there, unless the median rule had stopped it before
    six = {c.data.tags["danlu.trial"] for c in children if c.data.params["fail_at"] == "6"}
    assert failed and set(failed) <= six
    assert six - set(failed) <= {c.data.tags["danlu.trial"] for c in stopped}
    assert stopped, "the median rule stopped no trial"
    client = mlflow_runs(tmp_path / "mlflow.db")[0]
    for c in stopped:
        assert max(m.step for m in client.get_metric_history(c.info.run_id, "score")) < 8
    report = json.loads(Path(client.download_artifacts(parent.info.run_id, "report/report.json")).read_text())
    night = report["night"]
    assert sorted(f["trial"] for f in night["failed"]) == failed and night["trials"] == 8
    assert all("failing at epoch 6" in f["error"] for f in night["failed"])
    assert f"{len(failed)} of 8 trial(s) failed" in r.stdout


def test_every_public_function_of_orchestrator_says_what_it_does():
    def undocumented(body, prefix, path):
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
                if ast.get_docstring(node) is None:
                    yield f"{path.relative_to(ROOT)}:{node.lineno} {prefix}{node.name}"
            elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                yield from undocumented(node.body, f"{prefix}{node.name}.", path)

    missing = [m for p in sorted((ROOT / "orchestrator").rglob("*.py"))
               for m in undocumented(ast.parse(p.read_text()).body, "", p)]
    assert missing == []


def test_orchestrators_imports_have_no_cycle_lazy_ones_included():
    """The modules form floors: each imports (at its top or inside a function) only modules below it."""
    import graphlib

    mods = {}
    for p in (ROOT / "orchestrator").rglob("*.py"):
        parts_ = p.relative_to(ROOT).with_suffix("").parts
        mods[".".join(parts_[:-1] if parts_[-1] == "__init__" else parts_)] = p
    graph = {m: {t for t in _imports(p) if t in mods and t != m} for m, p in mods.items()}
    order = list(graphlib.TopologicalSorter(graph).static_order())  # raises CycleError, naming the cycle
    assert len(order) == len(mods)


# The wings of orchestrator/, from the ground up (each package's docstring says what it owns and may import). A
# module imports (at its top or inside a function) its own wing and wings on lower floors only; a floor's wings
# never import each other. Top-level modules are named by themselves.
FLOORS = [
    {"errors", "tags", "stats", "hydra_internals", "conf"},
    {"api", "plugins", "config", "storage", "scaffold"},
    {"ray_internals"},
    {"tracking", "cluster", "trial"},
    {"search"},
    {"scheduler"},
    {"report"},
    {"launch"},
    {"run"},
    {"remote", "review"},
    {"cli", "hydra_plugin"},
    {"__main__"},
]


def _wing(module: str) -> str:
    parts_ = module.split(".")
    return parts_[1] if len(parts_) > 1 else "__init__"


def test_each_wing_imports_only_wings_below_it():
    floor = {w: i for i, ws in enumerate(FLOORS) for w in ws}
    wings = {p.relative_to(ROOT / "orchestrator").parts[0].removesuffix(".py")
             for p in (ROOT / "orchestrator").iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()}
    assert wings - {"__init__"} == set(floor), "every wing stands on a floor of FLOORS"
    climbs = []
    for p in (ROOT / "orchestrator").rglob("*.py"):
        here = p.relative_to(ROOT / "orchestrator").parts[0].removesuffix(".py")
        if here == "__init__":
            continue
        for name in _imports(p):
            if name.startswith("orchestrator.") and (there := _wing(name)) in floor and there != here \
                    and floor[there] >= floor[here]:
                climbs.append(f"{p.relative_to(ROOT)} -> {name}")
    assert sorted(set(climbs)) == []


def test_a_sweeps_path_never_imports_the_cluster_client():
    """From `danlu sweep` (orchestrator/run/sweep.py) through every import, lazy ones included: the login node's
    Jobs API client (and the rest of remote/) is never reached."""
    mods = {}
    for p in (ROOT / "orchestrator").rglob("*.py"):
        parts_ = p.relative_to(ROOT).with_suffix("").parts
        mods[".".join(parts_[:-1] if parts_[-1] == "__init__" else parts_)] = p
    seen, todo = set(), ["orchestrator.run.sweep"]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        todo += [t for t in _imports(mods[m]) if t in mods]
    assert "orchestrator.run.tuner" in seen and "orchestrator.launch.preflight" in seen  # the walk went far
    assert sorted(m for m in seen if m.startswith("orchestrator.remote")) == []


def test_tracking_store_names_a_runstore_class_or_is_bad_input():
    from orchestrator.errors import BadInput
    from orchestrator.tracking import store_class

    assert store_class("memory_store:MemoryStore").__name__ == "MemoryStore"  # a second implementation, by path
    for wrong in ("nope", "os:path", "json:JSONDecoder", "memory_store:nothing"):
        with pytest.raises(BadInput, match=f"tracking.store={wrong}: no such store"):
            store_class(wrong)


@pytest.mark.contract
@pytest.mark.parametrize("package, protocol", PLUGINS, ids=[p for p, _ in PLUGINS])
def test_each_packages_docstring_names_the_methods_its_protocol_has(package, protocol):
    """The package says "provides what `Protocol` states (a, b, c)": exactly the protocol's methods."""
    import importlib
    import re

    pkg = importlib.import_module(package)
    said = re.search(rf"`{protocol}`[^(]*?states \(([\w, ]+)\)", " ".join(pkg.__doc__.split()))
    assert said, f"{package}'s docstring says what `{protocol}` states, in parentheses"
    methods = {n for n, v in vars(getattr(pkg, protocol)).items() if callable(v) and not n.startswith("_")}
    assert {m.strip() for m in said.group(1).split(",")} == methods


@pytest.mark.contract
def test_the_run_stores_docstring_names_only_what_it_has():
    import re

    from orchestrator.tracking import RunStore
    from orchestrator.tracking.journal import OPS

    members = {n for n in vars(RunStore) if not n.startswith("_")} | set(RunStore.__annotations__)
    assert set(OPS) <= members, "every journaled operation is a method of the store"
    reading = re.search(r"Reading serves [^:]*: ([\w, ]+)\.", " ".join(RunStore.__doc__.split()))
    assert reading and {n.strip() for n in reading.group(1).split(",")} <= members
    documented = re.findall(r"^\s+(\w+): ", RunStore.__doc__, re.M)  # no attribute named in prose only
    assert set(documented) <= members
