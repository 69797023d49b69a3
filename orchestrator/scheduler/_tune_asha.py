"""ASHA as a Ray Tune scheduler (see orchestrator/scheduler/asha.py for what it decides, and _group_rungs.py)."""

from __future__ import annotations

from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from orchestrator.ray_internals import (
    asha_carry,
    asha_limits,
    asha_load,
    asha_metric,
    asha_state,
    hold_added,
    stored_result,
)
from orchestrator.scheduler import Recording
from orchestrator.scheduler._group_rungs import Decision, GroupRungs, milestones


def group_of(trial) -> tuple[str, int]:
    """A danlu trial's configuration (danlu.config_id) and seed."""
    from orchestrator.config.space import config_id

    return config_id(trial.config["hp"]), int(trial.config["seed"])


class ASHA(Recording, ASHAScheduler):
    """Tune's ASHA, recording which trials it stopped before max_t (for MLflow tags and the counts), able to
    hand its rung records over to a resumed sweep (see orchestrator.run.tuner.SchedulerState), and judging seed
    groups when there are several seeds.

    With several seeds a configuration's seeds go on or stop together: a seed that reaches a rung before the
    group's decision there waits (Tune's PAUSE, with its checkpoint) and runs again only once the group goes on;
    stopped, it is stopped where it waits. Trials that may run are chosen in this order: a waiting seed whose
    group went on, a seed of a configuration already started, then a new configuration (choose_trial_to_run).
    A resumed sweep holds its restored trials the same way (on_trial_add), so none runs past a rung whose
    decision is pending or "stop"."""

    def __init__(self, seeds=(0,), say=print, **kwargs):
        super().__init__(**kwargs)
        self.say = say
        self.groups = None
        self._held: dict = {}  # trials waiting at a rung for their group's decision (PAUSED), in the order held
        self._begun: set[str] = set()  # configurations with a seed that has reported
        self._groups_of: dict[str, tuple[str, int]] = {}  # trial_id -> (config, seed)
        if len(seeds) > 1:
            rf, grace, max_t = kwargs["reduction_factor"], kwargs.get("grace_period", 1), kwargs["max_t"]
            self.groups = GroupRungs(milestones(grace, max_t, rf), rf, list(seeds))
        self._labels: dict[str, str] = {}  # config_id -> its values, for the terminal

    def __getstate__(self):  # Tune pickles the scheduler into tuner.pkl; the terminal and the trials stay here
        return {k: v for k, v in super().__getstate__().items() if k not in ("say", "_held")}

    def __setstate__(self, state):
        super().__setstate__(state)
        self.say = print
        self._held = {}

    @property
    def decisions(self) -> list[Decision]:
        """The seed-group decisions made so far (none with one seed: Tune's ASHA decides per trial)."""
        return list(self.groups.decisions) if self.groups else []

    def on_trial_result(self, tune_controller, trial, result):
        """Tune's hook: ASHA's decision on this result (with several seeds, the seed group's), recording a trial
        stopped before max_t. At max_t itself the trial goes on to end by itself; past it (a job longer than
        max_t), it is stopped."""
        time_attr, max_t = asha_limits(self)
        metric, sign = asha_metric(self)
        if self.groups is None:
            decision = super().on_trial_result(tune_controller, trial, result)
        elif time_attr not in result or metric not in result:
            return TrialScheduler.CONTINUE
        else:
            config, seed = self._group(trial)
            self._label(config, trial)
            self._begun.add(config)
            stop, made = self.groups.result(config, seed, result[time_attr], sign * result[metric])
            self._say(made)
            if stop or result[time_attr] > max_t:
                decision = TrialScheduler.STOP
            elif self.groups.waiting(config, result[time_attr]) is not None:
                decision = TrialScheduler.PAUSE  # ahead of its group: it waits at the rung, with its checkpoint
                self._held[trial] = None
            else:
                decision = TrialScheduler.CONTINUE
        if decision == TrialScheduler.STOP and result.get(time_attr, 0) == max_t:
            # the job's last report (max_t follows its length): its function ends by itself, and runs what follows
            # its loop (a task function's return, a final save), which Tune's stop here would cut off
            decision = TrialScheduler.CONTINUE
        if decision == TrialScheduler.STOP and result.get(time_attr, 0) < max_t:
            self.stopped_early.add(trial.trial_id)
        return decision

    def _group(self, trial) -> tuple[str, int]:
        found = self._groups_of.get(trial.trial_id)
        if found is None:
            found = self._groups_of[trial.trial_id] = group_of(trial)
        return found

    def _iteration(self, trial) -> float:
        return stored_result(trial).get(asha_limits(self)[0]) or 0

    def _ended(self, trial) -> None:
        self._held.pop(trial, None)
        if self.groups is not None:
            config, seed = self._group(trial)
            self._say(self.groups.end(config, seed, self._iteration(trial)))

    def on_trial_add(self, tune_controller, trial):
        """Tune's hook: a trial added, put back to be retried, or restored by a resumed sweep. A seed that comes
        back is waited for again; a restored one whose group's decision at a rung it reached is pending or "stop"
        is held (PAUSED) instead of starting: choose_trial_to_run runs or stops it once the group is decided."""
        super().on_trial_add(tune_controller, trial)
        if self.groups is None:
            return
        if trial.status == "ERROR":  # a retry the policy refused (orchestrator/trial/retries.py): the seed has ended
            self._ended(trial)
            return
        config, seed = self._group(trial)
        if trial.status != "TERMINATED":
            self.groups.back(config, seed)
        iteration = self._iteration(trial)
        if not iteration or trial.status != "PENDING" or tune_controller is None:
            return
        self._begun.add(config)
        if config in self.groups.stopped or self.groups.waiting(config, iteration) is not None:
            hold_added(trial)
            self._held[trial] = None

    def choose_trial_to_run(self, tune_controller):
        """With several seeds: a held seed whose group went on (a held one whose group stopped is stopped here),
        else the first pending seed of a configuration already started, else Tune's first pending trial. A held
        seed whose group is still undecided is never chosen."""
        if self.groups is None:
            return super().choose_trial_to_run(tune_controller)
        for trial in list(self._held):
            if trial.status != "PAUSED":  # still RUNNING (Tune pauses it after this result), or already restarted
                if trial.status in ("TERMINATED", "ERROR"):
                    del self._held[trial]
                continue
            config, _ = self._group(trial)
            if config in self.groups.stopped:
                self.stopped_early.add(trial.trial_id)
                del self._held[trial]
                tune_controller.stop_trial(trial)
            elif self.groups.waiting(config, self._iteration(trial)) is None:
                del self._held[trial]
                return trial
        first = None
        for n, trial in enumerate(list(self._waiting)):
            status = trial.status
            if status in ("TERMINATED", "ERROR"):
                del self._waiting[trial]
            elif status == "PENDING":
                if self._group(trial)[0] in self._begun:
                    return trial
                first = first or trial
                if n > 1000:  # a scan per step of Tune's loop: bounded where thousands of trials wait
                    break
        return first

    def on_trial_complete(self, tune_controller, trial, result):
        """Tune's hook: the trial ended; its seed group learns it will report no more."""
        super().on_trial_complete(tune_controller, trial, result)
        self._ended(trial)

    def on_trial_error(self, tune_controller, trial):
        """Tune's hook: the trial failed; its seed group is not kept waiting for it, unless Tune is retrying it (its
        group waits for it to come back, rather than judge a rung on the other seeds alone)."""
        from orchestrator.ray_internals import being_retried

        super().on_trial_error(tune_controller, trial)
        if not being_retried(trial):
            self._ended(trial)

    def on_trial_remove(self, tune_controller, trial):
        """Tune's hook: the trial was removed; its seed group is not kept waiting for it."""
        super().on_trial_remove(tune_controller, trial)
        self._ended(trial)

    def _label(self, config: str, trial) -> None:
        if config not in self._labels:
            from orchestrator.config.space import short_label

            self._labels[config] = short_label(trial.config["hp"]) or config

    def _say(self, made: list[Decision]) -> None:
        metric, sign = asha_metric(self)
        for d in made:
            if d.stop and d.cutoff is not None:  # a stop is always against a cutoff
                self.say(f"danlu: ASHA stopped configuration {d.config} ({self._labels.get(d.config, '')}) at rung "
                         f"{d.rung:g}: mean {metric} {sign * d.mean:.4g} over {d.seeds} seed(s), below the "
                         f"rung's cutoff {sign * d.cutoff:.4g}")

    def carry(self, earlier: list[dict], grown: set[str], sign: float, decisions: list[dict]) -> None:
        """An extension's ASHA starts with the earlier trials' values at its rungs (see Recording.carry), so a new
        configuration is cut against the old ones. With several seeds the earlier groups' means are recorded at each
        rung they reached whole, and a configuration given more seeds is decided again on its grown group (its earlier
        seeds count where they reached the rung); with one seed Tune's own rungs hold each earlier trial."""
        if self.groups is None:
            asha_carry(self, {f"earlier:{e['config']}:{e['seed']}": {s: sign * v for s, v in e["values"]}
                              for e in earlier})
            return
        self.groups.carry([{**e, "values": [[s, sign * v] for s, v in e["values"]]} for e in earlier], grown,
                          decisions)

    def state(self) -> dict:
        """Tune's ASHA rung records, the trials stopped early, the seed groups' records and labels: plain data."""
        return {**asha_state(self), **super().state(),
                "groups": self.groups.state() if self.groups else None, "labels": dict(self._labels)}

    def load_state(self, state: dict) -> None:
        """Take back what state() saved (after Tuner.restore)."""
        asha_load(self, state)
        super().load_state(state)
        if self.groups is not None and state.get("groups"):
            self.groups.load(state["groups"])
        self._labels.update(state.get("labels") or {})
