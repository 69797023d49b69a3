"""Population-based training as a scheduler plug-in (orchestrator/scheduler/pbt.py, orchestrator/conf/scheduler/
pbt.yaml), written from docs/extending.md: one real sweep of the sleeping job on a real Ray and a real MLflow store,
checked for what a user sees of it: the exploits said on the terminal, each exploited trial's run (its starting
values as params, its last values in config.yaml, every step once), and a report that says a row is a trial's
starting point and proposes no comparison of rows. What it refuses (several seeds, a learning searcher, an
interval that is not a multiple of checkpoint.every) is in tests/test_cli.py's bad input."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.conftest import danlu_cli, mlflow_runs

pytestmark = pytest.mark.integration

EPOCHS = 10


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("pbt")
    r = danlu_cli(["sweep", "--no-preflight", "job=sleep", "sweep=sleep", "scheduler=pbt", "checkpoint_state=true",
                   "sweep.num_samples=4", f"epochs={EPOCHS}", "epoch_s=0.3", "sweep.search_seed=1", "sweep.name=pbt"],
                  cwd)
    return r, cwd


def test_the_sweep_ends_well_and_each_exploit_is_said(sweep):
    r, _ = sweep
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "danlu: 4 trials: 4 completed, 0 stopped early, 0 failed" in r.stdout
    exploits = re.findall(r"danlu: PBT: (t\d{3}) took a better trial's checkpoint at report (\d+): x ([\d.]+) -> "
                          r"([\d.]+)", r.stdout)
    assert exploits, r.stdout[-3000:]
    assert all(int(at) % 2 == 0 for _, at, _, _ in exploits)  # at the perturbation interval (2) only
    # never at a trial's last report, where the copied checkpoint would train no further
    assert all(int(at) < EPOCHS for _, at, _, _ in exploits), exploits


def test_an_exploited_trials_run_keeps_where_it_started_and_where_it_ended_every_step_once(sweep):
    r, cwd = sweep
    exploits = re.findall(r"danlu: PBT: (t\d{3}) took .* at report \d+: x ([\d.]+) -> ([\d.]+)", r.stdout)
    client, parents, children = mlflow_runs(cwd / "mlflow.db", "pbt")
    assert len(parents) == 1 and len(children) == 4
    by_label = {c.info.run_name.split()[0]: c for c in children}
    first = {}
    for label, before, _after in exploits:
        first.setdefault(label, before)
        run = by_label[label]
        history = client.get_metric_history(run.info.run_id, "score")
        assert sorted(m.step for m in history) == list(range(1, EPOCHS + 1))
        config = yaml.safe_load(open(client.download_artifacts(run.info.run_id, "config.yaml", str(cwd))))
        last = [a for lab, _, a in exploits if lab == label][-1]
        assert f"{config['x']:.4g}" == last  # its last attempt's values
        assert f"{float(run.data.params['x']):.4g}" == first[label]  # where it started


def test_the_report_says_a_row_is_a_starting_point_and_proposes_no_comparison(sweep):
    r, _ = sweep
    assert "Verdict: scheduler pbt changed hyperparameters as the trials ran: a row is a trial's starting values" in r.stdout
    assert "\nNext: danlu compare" not in r.stdout


def test_no_exploit_at_a_trials_last_report_and_one_left_unused_is_said():
    """Tune's PBT cannot know a trial's length: at its last report it may copy a checkpoint the trial then never
    trains on (seen: 2 of 4 runs of the sweep above). danlu's knows it (cfg.epochs) and lets the trial end; where the
    job decides its length, a trial that ends where it was exploited is said, since its run keeps the values it last
    trained with. Real Tune objects; no controller is needed (None), so none is asked."""
    from ray.tune.experiment import Trial

    from orchestrator.scheduler.pbt import PBT

    said: list[str] = []
    pbt = PBT(time_attr="training_iteration", perturbation_interval=2, hyperparam_mutations={"hp": {"x": [0.1, 0.2]}},
              metric="score", mode="max")
    pbt.say, pbt.length = said.append, EPOCHS
    trial = Trial("fn", config={"hp": {"x": 0.2}, "seed": 0}, trial_id="abc_00002", stub=True)
    assert pbt.on_trial_result(None, trial, {"training_iteration": EPOCHS, "score": 0.0}) == "CONTINUE"
    assert trial.config["hp"] == {"x": 0.2} and not said

    pbt.unused[trial.trial_id] = (6, {"x": 0.1})  # as an exploit at report 6 leaves it, in a job of unknown length
    pbt.on_trial_complete(None, trial, {"training_iteration": 6, "score": 0.0})
    assert said == ["danlu: PBT: t002 ended at report 6, where it was exploited: it trained no further, and its run "
                    "keeps the values it last trained with (x 0.1)."]
