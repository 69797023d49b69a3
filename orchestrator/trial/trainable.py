"""One trial: overrides -> Hydra compose -> job.train(cfg, ctx). Runs on a Ray worker, or in-process.

The Tune trainable is a plain function (Tune's function API). With reuse_actors a worker process runs
many trials one after another, so everything a trial changes process-wide (stdout, torch threads,
CUDA cache) is put back when it ends; seeding is the job's first act (it reads cfg.seed).
"""

from __future__ import annotations

import importlib
import importlib.util
import io
import json
import math
import os
import pickle
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from orchestrator.config.compose import plain
from orchestrator.errors import BadInput
from orchestrator.trial.ctx import check_metrics, check_step
from orchestrator.trial.memory_limit import MemoryWatch

STATE_FILES = ("state.pt", "state.pkl")  # torch.save when the job uses torch, else pickle
META_KEY = "_danlu"  # trial metadata in the first result (resolved config, node, GPUs); never a metric
TIME_KEY = "_danlu_ms"  # when the job reported, in ms (Tune's own `timestamp` is in whole seconds)
RESTORE_NOTES: dict[str, str] = {}  # trial_id -> which checkpoint a restore fell back to (ray_internals)


CKPT_PREFIX = "danlu-ckpt-"  # a checkpoint being written: danlu-ckpt-<pid of the trial's process>-<random>
_cleared = False  # whether this process looked for stale ones yet
STALE_S = 600.0  # a checkpoint folder written to more recently than this is never taken for a dead one's


def clear_stale_checkpoints(root: str | None = None) -> list[str]:
    """Remove the checkpoint folders, in the temp folder, of trial processes that no longer exist: a trial killed
    while it saved (its node lost, the sweep stopped) never ran its TemporaryDirectory's cleanup, and a night of
    them fills a node's /tmp. Those of a live process (this one's, another sweep's) are left alone; a pid taken
    again by a new process keeps its folder until that one ends too; and so is one written to in the last
    STALE_S seconds (a process in another pid namespace sharing this /tmp looks dead from here). Once per process;
    what was removed."""
    global _cleared
    if _cleared and root is None:
        return []
    _cleared = True
    removed = []
    for path in Path(root or tempfile.gettempdir()).glob(CKPT_PREFIX + "*"):
        if not writer_gone(path) or _touched_within(path, STALE_S):
            continue
        import shutil

        shutil.rmtree(path, ignore_errors=True)
        removed.append(str(path))
    return removed


def _touched_within(path: Path, seconds: float) -> bool:
    newest = 0.0
    for folder, _, files in os.walk(path):
        for name in (folder, *(os.path.join(folder, f) for f in files)):
            try:
                newest = max(newest, os.stat(name).st_mtime)
            except OSError:
                pass
    return time.time() - newest < seconds


def writer_gone(path: Path) -> bool:
    """Whether the trial process that named this checkpoint folder (CKPT_PREFIX<pid>-...) no longer exists. False
    for a name without a pid: an earlier danlu's folder may be in use, not ours to judge."""
    pid = path.name[len(CKPT_PREFIX):].split("-", 1)[0]
    return pid.isdigit() and not _alive(int(pid))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def meta_of(result: dict) -> dict | None:
    """The trial metadata a result carries (its first), or None."""
    meta = result.get(META_KEY)
    if isinstance(meta, str):
        try:
            meta = json.loads(meta)
        except ValueError:
            return None
    return meta if isinstance(meta, dict) else None


def check_job(fn_path: str, root: Path) -> None:
    """Fail early, in the driver, on a job.fn that is not a function: no module, no such name, or a name bound to a
    module or a class. Read from the module's source, not imported: importing a job imports torch and whatever
    else it needs (seconds, and heavy for a command that may only be refusing bad input); a name the source binds
    in a way it cannot judge (an assignment, an import of a name) passes here and is checked where it is loaded."""
    import ast

    module, _, func = str(fn_path).partition(":")
    if not module or not func or not all(part.isidentifier() for part in (*module.split("."), func)):
        raise BadInput(f"job.fn={fn_path}: expected 'module:function', e.g. jobs.digits:train.")
    # the project's own file first (a `jobs` package imported from elsewhere in this process must not hide it)
    here = Path(root, *module.split("."))
    origin = next((str(f) for f in (here.with_suffix(".py"), here / "__init__.py") if f.is_file()), None)
    if origin is None:
        _on_path(root)
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            spec = None
        if spec is None:
            raise BadInput(f"job.fn={fn_path}: no module '{module}' under {root} or on the Python path.")
        origin = spec.origin
    if not origin or not origin.endswith(".py"):
        return  # compiled or namespace: only an import can tell
    try:
        tree = ast.parse(Path(origin).read_text(encoding="utf-8", errors="replace"))
    except (OSError, SyntaxError) as exc:
        raise BadInput(f"job.fn={fn_path}: {origin} cannot be read as Python: {exc}") from None
    kind = None
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == func:
            kind = "function"
        elif isinstance(node, ast.ClassDef) and node.name in (func, "__getattr__"):
            kind = "class" if node.name == func else "unknown"
        elif isinstance(node, ast.Import) and any((a.asname or a.name.split(".")[0]) == func for a in node.names):
            kind = "module"
        elif isinstance(node, ast.ImportFrom) and any(a.name == "*" or (a.asname or a.name) == func
                                                      for a in node.names):
            kind = "unknown"
        elif not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Import, ast.ImportFrom,
                                   ast.Expr)):
            if func in {n.id for n in ast.walk(node) if isinstance(n, ast.Name)} or any(
                    isinstance(n, ast.FunctionDef) and n.name in (func, "__getattr__") for n in ast.walk(node)):
                kind = "unknown"  # bound by an assignment, a loop, an if: an import will tell
    if kind is None:
        raise BadInput(f"job.fn={fn_path}: module '{module}' ({origin}) has no '{func}'.")
    if kind in ("module", "class"):
        raise BadInput(f"job.fn={fn_path}: '{func}' in module '{module}' ({origin}) is a {kind}, not a "
                       "function.")


def load_job(fn_path: str, root: Path) -> Callable:
    """The job function `module:function` (jobs/ importable from `root`); bad input naming job.fn if there is
    none."""
    module, _, func = str(fn_path).partition(":")
    if not module or not func:
        raise BadInput(f"job.fn={fn_path}: expected 'module:function', e.g. jobs.digits:train.")
    _on_path(root)
    try:
        found = importlib.util.find_spec(module) is not None
    except (ModuleNotFoundError, ValueError):
        found = False
    if not found:
        raise BadInput(f"job.fn={fn_path}: no module '{module}' under {root} or on the Python path.")
    try:
        mod = importlib.import_module(module)
    except Exception as exc:  # the user's module fails as it loads: say how, in one line
        raise BadInput(f"job.fn={fn_path}: importing '{module}' failed: {type(exc).__name__}: "
                       f"{' '.join(str(exc).split())[:300]}") from None
    fn = getattr(mod, func, None)
    if fn is None:
        raise BadInput(f"job.fn={fn_path}: module '{module}' ({getattr(mod, '__file__', '?')}) has no '{func}'.")
    if not callable(fn) or isinstance(fn, type):
        raise BadInput(f"job.fn={fn_path}: '{func}' in module '{module}' is a {type(fn).__name__}, not a function.")
    return fn


def set_threads(cpus: float) -> None:
    """torch's CPU threads for a trial: the CPUs it was given (torch's default takes every core of the node)."""
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(max(1, int(cpus)))


def call_job(fn: Callable, cfg, ctx, metric: str | None = None) -> None:
    """Run a job: train(cfg, ctx), the job contract; or a task function, fn(cfg) (a @hydra.main app's, or any
    function of one config), which reports through orchestrator.api and whose return value, when it reported
    nothing, is its one result (a number: the sweep's metric; a mapping: metrics by name)."""
    from orchestrator import api

    if not api.takes_config_only(fn):
        fn(cfg, ctx)
        return
    with api.active(ctx) as seen:
        value = fn(cfg)
    if not seen.reports:
        if metric is None and "sweep" in cfg:
            metric = cfg.sweep.get("metric")
        api.report_return(ctx, value, metric)


def _on_path(root: Path) -> None:
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))


def save_state(state: Any, directory: str) -> None:
    """Write a checkpoint's state into `directory`: torch's format where torch is loaded (tensors), pickle
    otherwise."""
    torch = sys.modules.get("torch")
    if torch is not None:  # tensors: torch's own format
        torch.save(state, os.path.join(directory, STATE_FILES[0]))
    else:
        with open(os.path.join(directory, STATE_FILES[1]), "wb") as f:
            pickle.dump(state, f)


def load_state(directory: str) -> Any:
    """Read the state save_state wrote (torch's file first, on the CPU)."""
    pt, pkl = (os.path.join(directory, name) for name in STATE_FILES)
    if os.path.exists(pt):
        import torch

        return torch.load(pt, weights_only=False, map_location="cpu")
    with open(pkl, "rb") as f:
        return pickle.load(f)


class TuneContext:
    """The job contract on Ray Tune: report -> tune.report (+ Tune checkpoint), restore -> tune.get_checkpoint."""

    def __init__(self, checkpoint_every: int = 1, meta: dict | None = None, stop_on_nan: bool = True):
        self.checkpoint_every = max(1, int(checkpoint_every))
        self.stop_on_nan = stop_on_nan
        self._meta = meta
        self._reports = 0
        self._iteration = self._restored_iteration()  # Tune's training_iteration of the last report
        self._last_step: int | None = None  # this attempt's last step: steps only go forward within an attempt
        self.stopped = False  # Tune stopped the trial inside a report (not the job's own sys.exit)

    @staticmethod
    def _restored_iteration() -> int:
        from ray import tune

        from orchestrator.storage.checkpoints import MARKER

        ckpt = tune.get_checkpoint()
        if ckpt is None:
            return 0
        with ckpt.as_directory() as d:
            try:
                with open(os.path.join(d, MARKER)) as f:
                    return int(json.load(f)["iteration"])
            except (OSError, ValueError, KeyError):
                return 0

    def report(self, step, metrics, checkpoint=None):
        """Report to Tune: the metrics (a NaN fails the trial under failure.stop_on_nan), the step, and a
        checkpoint of `checkpoint` every checkpoint.every reports, written whole with its marker."""
        from ray import tune

        result: dict[str, Any] = check_metrics(step, metrics)
        self._last_step = check_step(self._last_step, step)
        bad = {k: v for k, v in result.items() if not math.isfinite(v)}
        if bad and self.stop_on_nan:
            raise FloatingPointError(f"non-finite metric at step {step}: {bad} (failure.stop_on_nan=true)")
        result["step"] = step
        result[TIME_KEY] = time.time_ns() // 1_000_000
        if self._meta is not None:  # first report: resolved config, node, GPUs, the job's metric names
            # as one JSON string: Tune keeps, for the whole sweep, running statistics (min, max, last-5 and
            # last-10 averages, with their deques) of every number in a trial's results, so a nested dict's
            # numbers would cost every trial ~60 KB of the driver's memory (measured with tracemalloc)
            result[META_KEY] = json.dumps({**self._meta, "metrics": list(metrics)}, default=str)
            self._meta = None
        self._reports += 1
        self._iteration += 1
        if checkpoint is None or self._reports % self.checkpoint_every:
            self._send(result)
            return
        from orchestrator.storage.checkpoints import write_marker

        clear_stale_checkpoints()
        with tempfile.TemporaryDirectory(prefix=f"{CKPT_PREFIX}{os.getpid()}-") as tmp:
            save_state(checkpoint, tmp)
            write_marker(tmp, self._iteration, step)  # what a restore checks, and needs if Tune's record is lost
            self._send(result, tune.Checkpoint.from_directory(tmp))

    def _send(self, result: dict, checkpoint=None) -> None:
        """tune.report; a SystemExit from inside it is Tune stopping the trial (Ray's session exits the training
        thread so), remembered so that the job's own sys.exit is told apart from it."""
        from ray import tune

        try:
            tune.report(result, checkpoint=checkpoint)
        except SystemExit:
            self.stopped = True
            raise

    def restore(self):
        """The state of the trial's last whole checkpoint (Tune's, or the one a restore fell back to), or None."""
        from ray import tune

        ckpt = tune.get_checkpoint()
        if ckpt is None:
            return None
        with ckpt.as_directory() as d:
            return load_state(d)


class _Tee(io.TextIOBase):
    """Write-through copy of a stream into the trial's log file."""

    def __init__(self, stream, log):
        self._stream, self._log = stream, log

    def write(self, s):
        self._log.write(s)
        self._log.flush()
        return self._stream.write(s)

    def flush(self):
        self._stream.flush()

    def isatty(self):
        return False


_hydra_lock = threading.Lock()
_composed: dict[tuple, Any] = {}  # (config_dir, overrides that choose configs) -> composed config
_initialized: list[str] = []  # the config dir Hydra was last initialized with in this process


def compose_trial(config_dir: str, overrides: list[str]):
    """Compose conf/ + overrides in this worker with Hydra: a copy of it, composed once per distinct set.

    Only a trial that chooses config options (`job/model=cnn`) needs it: the sweep's own composition
    comes from the driver (make_trainable). Composition takes ~60 ms here, and Hydra's import 0.2 s.
    """
    import copy

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from orchestrator.config.compose import CONFIG_NAME, use_package_conf

    key = (config_dir, tuple(overrides))
    with _hydra_lock:
        if key not in _composed:
            gh = GlobalHydra.instance()
            if not gh.is_initialized() or _initialized != [config_dir]:
                gh.clear()
                use_package_conf()
                initialize_config_dir(config_dir, version_base="1.3", job_name="danlu")
                _initialized[:] = [config_dir]
            _composed[key] = compose(CONFIG_NAME, overrides=list(overrides))
        return copy.deepcopy(_composed[key])


def trial_config(base_cfg, config_dir: str, base_overrides: list[str], group_keys: set[str], hp: dict, seed: int):
    """A trial's config: what Hydra's compose(base_overrides + the trial's `key=value`s) gives.

    The sweep's composition (base_cfg, composed by the driver) is copied, or composed here when the trial
    chooses config options; then the trial's values and seed are set on it (orchestrator.config.compose.set_values).
    """
    import copy

    from orchestrator.config.compose import set_values
    from orchestrator.config.space import SEED_KEY, override

    groups = [override(k, v) for k, v in hp.items() if k in group_keys]
    cfg = compose_trial(config_dir, base_overrides + groups) if groups else copy.deepcopy(base_cfg)
    return set_values(cfg, {k: v for k, v in hp.items() if k not in group_keys} | {SEED_KEY: seed})


def make_trainable(config_dir: str, base_cfg, base_overrides: list[str], group_keys: set[str], log_dir: str,
                   checkpoint_every: int, cpus: float, stop_on_nan: bool = True, app=None,
                   memory_mb: float | None = None):
    """The Tune trainable for this sweep (a function trainable that restores from the newest checkpoint that
    exists; see ray_internals.fallback_trainable). Its config is {"hp": {...}, "seed": int}. base_cfg is the
    sweep's composed config before any trial's values (unresolved), shipped with the trainable. `app`
    (orchestrator.trial.hydra_app.App): the trials are a Hydra app's task function, each composed in the app's tree."""

    def danlu_trial(config: dict) -> None:
        import ray
        from ray import tune

        # A submitted sweep's conf/ and jobs/ are Ray's working directory, unpacked on each node where Ray
        # chooses: if the driver's path to them does not exist here, they are in this worker's cwd.
        here = config_dir if os.path.isdir(config_dir) else os.path.join(os.getcwd(), os.path.basename(config_dir))
        root = str(Path(here).parent)

        trial_id = tune.get_context().get_trial_id()
        if app is not None:
            cfg = app.trial_config(config["hp"], config["seed"], trial_id)
        else:
            cfg = trial_config(base_cfg, here, base_overrides, group_keys, config["hp"], config["seed"])
        meta = {
            # YAML is made by the driver's MLflow writer
            "config": app.shown(cfg) if app is not None else plain(cfg),
            "hostname": socket.gethostname(),
            "gpu_ids": ",".join(str(g) for g in ray.get_gpu_ids()),
            "resources": ",".join(f"{k}={v:g}" for k, v in sorted(ray.get_runtime_context().get_assigned_resources().items())),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
            "pid": os.getpid(),
        }
        note = RESTORE_NOTES.pop(trial_id, None)
        if note:
            meta["restored_from"] = note
        os.makedirs(log_dir, exist_ok=True)
        with open(os.path.join(log_dir, f"{trial_id}.log"), "a", buffering=1) as log:
            out, err = sys.stdout, sys.stderr
            sys.stdout, sys.stderr = _Tee(out, log), _Tee(err, log)
            if note:
                print(f"danlu: restored from {note}", flush=True)
            ctx = TuneContext(checkpoint_every, meta, stop_on_nan)
            try:
                try:
                    with MemoryWatch(memory_mb, lambda: ctx._last_step), hard_exits_named(ctx, _length(cfg, app)):
                        if app is not None:
                            app.run(cfg, ctx, cpus)
                            return
                        job = load_job(cfg.job.fn, Path(root))
                        set_threads(cpus)
                        call_job(job, cfg, ctx)
                except SystemExit as exc:
                    if ctx.stopped:  # Tune's own way to stop a trial (ASHA): not a failure
                        raise
                    job_exited(exc, ctx._last_step, _length(cfg, app))
            except Exception:
                import traceback

                traceback.print_exc()
                raise
            finally:
                sys.stdout, sys.stderr = out, err
                torch = sys.modules.get("torch")
                if torch is not None and torch.cuda.is_initialized():
                    torch.cuda.empty_cache()

    from orchestrator.ray_internals import fallback_trainable

    return fallback_trainable(danlu_trial, RESTORE_NOTES)


class JobExited(RuntimeError):
    """The job ended its own process's work with sys.exit before it had made its reports."""


class HardExit(SystemExit):
    """The job's os._exit, raised in its stead while it runs in a trial (hard_exits_named)."""


def job_exited(exc: SystemExit, last_step: int | None, epochs: int | None) -> None:
    """A job's own sys.exit (not Tune's stop): fine where it came after the job's last epoch with code 0 (a script's
    habit), else a failure that says so (Ray's own words for it were "Should not have reached here")."""
    code = exc.code
    if code in (0, None) and epochs is not None and last_step is not None and last_step >= epochs:
        return
    where = f"at step {last_step}" if last_step is not None else "before its first report"
    of = f" ({epochs})" if epochs is not None else ""
    call = "os._exit" if isinstance(exc, HardExit) else "sys.exit"
    raise JobExited(f"the job called {call}({code if code is not None else ''}) {where} without finishing its "
                    f"epochs{of}") from None


@contextmanager
def hard_exits_named(ctx, epochs: int | None):
    """While the job runs, its os._exit in this process and thread is judged like its sys.exit (job_exited: "the job
    called os._exit(1) at step 3 ..."), instead of the worker dying with nothing said and the trial retried as if
    its node had gone. A child process (a forked data loader) and another thread of the job exit as they asked."""
    real, pid, thread = os._exit, os.getpid(), threading.get_ident()

    def _exit(code=0):
        if os.getpid() != pid or threading.get_ident() != thread:
            real(code)
        raise HardExit(code)  # judged as its sys.exit is (job_exited)

    os._exit = _exit
    try:
        yield
    finally:
        os._exit = real


def _length(cfg, app) -> int | None:
    """The trial's length in reports, where the config says it: epochs (a Hydra app's is its own key, if any)."""
    value = cfg.get("epochs") if "epochs" in cfg else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def run_local(cfg, config_dir: Path, stream=None) -> int:
    """`danlu run`: one trial in this process, no Ray, no MLflow."""
    from orchestrator.trial.ctx import LocalContext

    job = load_job(cfg.job.fn, config_dir.parent)
    ctx = LocalContext(metric=cfg.sweep.metric, stream=stream, checkpoint_every=cfg.checkpoint.every)
    call_job(job, cfg, ctx)
    if not ctx.history:
        raise BadInput(f"job.fn={cfg.job.fn}: the job returned without calling ctx.report().")
    step, last = ctx.history[-1]
    print(f"done: {len(ctx.history)} reports, last step {step}: {cfg.sweep.metric}={last.get(cfg.sweep.metric)}",
          file=stream or sys.stdout)
    return 0
