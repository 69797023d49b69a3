"""Put on PYTHONPATH by tests/test_seams.py: records which source file first imported each MLflow module in this
process (the frame that ran the import statement), into the file $DANLU_IMPORT_TRACE, so that a test can tell
danlu's imports of MLflow from Ray's (Ray Tune's usage telemetry imports its MLflow integration for every sweep
with callbacks)."""

import os
import sys

_PATH = os.environ.get("DANLU_IMPORT_TRACE")


def _hook(event, args):
    if event != "import" or not (args[0] == "mlflow" or args[0].startswith("mlflow.")) or args[0] in sys.modules:
        return
    frame = sys._getframe(1)
    while frame is not None:
        name = frame.f_code.co_filename
        if not (name.startswith("<") or "importlib" in name or f"{os.sep}mlflow{os.sep}" in name
                or name == __file__):
            break
        frame = frame.f_back
    with open(_PATH, "a") as f:
        f.write(f"{args[0]}\t{frame.f_code.co_filename if frame else '?'}\n")


if _PATH:
    sys.addaudithook(_hook)
