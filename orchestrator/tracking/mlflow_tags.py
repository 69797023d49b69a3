"""MLflow's own tag names that danlu writes or reads: the tracking wing's alone (orchestrator/tags.py holds danlu's)."""

PARENT = "mlflow.parentRunId"
RUN_NAME = "mlflow.runName"
NOTE = "mlflow.note.content"  # a run's description, shown on its page in the MLflow UI
GIT_COMMIT = "mlflow.source.git.commit"
SOURCE_NAME = "mlflow.source.name"  # the run's source in the UI: the command that started the sweep
SOURCE_TYPE = "mlflow.source.type"
EXPERIMENT_KIND = "mlflow.experimentKind"  # an experiment tag: the UI's default page for it
TRAINING = "custom_model_development"  # ...the runs page, not MLflow 3's GenAI overview
SHARED_VIEW = "mlflow.sharedViewState.{}"  # an experiment tag: a runs table's columns, filter and order (links.py)
