"""A trial's names: its number in the sweep, its short name (t003) on the terminal and in MLflow, its folder."""

from __future__ import annotations

FIRST = 0  # the number of the first trial of the part of the sweep that runs (an extension's: after the earlier ones)


def trial_index(trial) -> int:
    """The trial's number in its sweep, from 0: FIRST and its number in Tune's experiment. BasicVariantGenerator's
    trial ids end in that (..._00003); a Searcher's are random, and Tune's experiment tag begins with the count, from
    1, of trials it created."""
    head, _, tail = str(trial.trial_id).rpartition("_")
    if head and tail.isdigit():
        return FIRST + int(tail)
    return FIRST + int(str(trial.experiment_tag).split("_", 1)[0]) - 1


# Module-level, not lambdas: Tune pickles both into every trial's state (held in memory and written in every
# snapshot); a lambda is pickled by value (~1.4 KB each), a function of a module by its name.
def trial_name(trial) -> str:
    """Tune's name of a trial: t000, t001, ..."""
    return f"t{trial_index(trial):03d}"


def trial_dirname(trial) -> str:
    """A trial's folder in the sweep's storage: its name and Tune's id."""
    return f"{trial_name(trial)}_{trial.trial_id}"
