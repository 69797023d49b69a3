"""The names of danlu's own tags on its runs: one place, so the writer, the sweep, the tests and the docs agree.
MLflow's own tag names are the tracking wing's (orchestrator/tracking/mlflow_tags.py)."""

# the sweep's parent run
SWEEP = "danlu.sweep"  # the sweep's name, on the parent and on every child
SWEEP_ID = "danlu.sweep_id"  # a sweep's identity (from its storage): how a restarted driver finds its parent
KIND = "danlu.kind"
VERSION = "danlu.version"
COMMAND = "danlu.command"
GIT_DIRTY = "danlu.git_dirty"
RESUMES = "danlu.resumes"
RESUME_COMMAND = "danlu.command.resume{}"
SEARCH_SEED = "danlu.search_seed"
SUBMISSION_ID = "danlu.submission_id"
RESUBMISSIONS = "danlu.resubmissions"
RESUBMISSION = "danlu.resubmission{}"
BEST_TRIAL = "danlu.best_trial"
BEST_TRIAL_ID = "danlu.best_trial_id"
BEST = "danlu.best_{}"
PREFLIGHT = "danlu.preflight"  # danlu.preflight.<check>: PASS|WARN|FAIL|SKIP: why (or "skipped")
FORECAST = "danlu.forecast.{}"  # trials, steps, fifo_steps: what `danlu plan` forecast (orchestrator/launch/forecast.py)
BUDGET = "danlu.budget"  # the budget limit that stopped the sweep, with what was used
SLURM_ALLOCATIONS = "danlu.slurm.allocations"  # Slurm allocations the sweep ran in (orchestrator/cluster/slurm.py)
SLURM_JOBS = "danlu.slurm.jobs"  # their Slurm job ids
SLURM_PREEMPTIONS = "danlu.slurm.preemptions"  # allocations that ended by a requeue of Slurm's (preemption, scontrol)
SLURM_TIME_LIMITS = "danlu.slurm.time_limits"  # ... by the time limit's warning signal (a graceful stop, a requeue)
EXTENSIONS = "danlu.extensions"  # how many times the sweep was extended (`danlu extend`)
EXTENSION_RECORD = "danlu.extension.{}"  # extension k: when, the command, what it changed and ran (JSON)
REPORT = "danlu.report"  # pending (the trials ended, the report is not attached yet) | made | failed: why

# a trial's child run
TRIAL_ID = "ray.trial_id"  # how a restarted driver finds a trial's run (never by a saved map alone)
TRIAL = "danlu.trial"
CONFIG_ID = "danlu.config_id"
SEED = "danlu.seed"
EXTENSION = "danlu.extension"  # on a trial's run: the extension of the sweep it ran in (absent: the sweep as begun)
OVERRIDES = "danlu.overrides"
NODE = "danlu.node"
GPU_IDS = "danlu.gpu_ids"
CUDA_VISIBLE_DEVICES = "danlu.cuda_visible_devices"
PID = "danlu.pid"
RESOURCES = "danlu.resources"  # what Ray gave the trial's process (CPU=1,GPU=0.25,...)
RETRIES = "danlu.retries"
STEPS_REPLAYED = "danlu.steps_replayed"
RESTORED_FROM = "danlu.restored_from"  # a restored trial whose snapshot's checkpoint was gone: what it used
PREEMPTED = "danlu.preempted.{}"  # cut by a preemption; resumed in the sweep's allocation {} (not failed)
TIME_LIMITED = "danlu.time_limited.{}"  # ... by an allocation's time limit (a graceful stop)
REDONE = "danlu.redone.{}"  # steps reported again from step {} after a restore: "STEPS SECONDS" (work lost, redone)
STOPPED_EARLY = "danlu.stopped_early"
ERROR = "danlu.error"
OUTCOME = "danlu.outcome"  # completed | stopped_early | failed | killed | interrupted | disk_full | budget
ORPHANED = "danlu.orphaned"  # why a run was set aside: no trial of Tune's owns it (kept, excluded from the report)
