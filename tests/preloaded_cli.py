"""`danlu` commands run in processes forked from one that has made their imports already.

A `danlu sweep` driver spends ~4 of its ~7 CPU-s importing Ray Tune, MLflow, SciPy, matplotlib and Hydra (measured:
docs/measurements.md), and the tests run a few hundred such commands on a 2-core machine. Here one process per
test process (the preloader) imports them once; each command is a fork of it that runs the same entry point as
`python -m orchestrator ARGS` (runpy), in its own process and session, with the test's cwd, environment and
arguments, its output captured, and ends as a Python process does (non-daemon threads joined, atexit handlers
run, its exit status its own). What a command does is the same; only its imports were made before it started.

Used by tests/conftest.py `danlu_cli` where the command runs on the test process's shared Ray with the test
process's environment. Where the environment differs (import-time settings would be the preloader's), where a
test starts its own Ray, or where the subject is the process itself (its imports, its start-up, a kill: the CLI,
wheel, chaos and recovery tests) a test runs `python -m orchestrator` as a user does.

Run as a script it is the preloader: one request a line on stdin (JSON: argv, cwd, env, out, err), answered on
stdout with the forked pid, then with the exit code when that process has ended.
"""

from __future__ import annotations

import io
import json
import locale
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

# what a sweep's driver imports (and `danlu report`, `compare`, `plan`): the preloader imports these and every
# orchestrator module before it serves
PRELOAD = ("ray", "ray.tune", "mlflow", "scipy.stats", "matplotlib.pyplot", "hydra", "omegaconf", "optuna")


class Preloaded:
    """This test process's preloader, started on first use; `run` is subprocess.run for `danlu ARGS`."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.env: dict[str, str] | None = None
        self.busy = threading.Lock()

    def run(self, args: list[str], cwd: Path, env: dict[str, str], timeout: float):
        """The command's CompletedProcess, or None where it cannot run here (another command is running in this
        preloader, or `env` is not the one the preloader started with): the caller runs it as a process of its own."""
        if not self.busy.acquire(blocking=False):
            return None
        try:
            if self.env is not None and _imported(env) != _imported(self.env):
                return None
            if self.proc is None or self.proc.poll() is not None:  # not started, or ended: start one
                self._start(env)
            return self._serve(args, Path(cwd), env, timeout)
        finally:
            self.busy.release()

    def _start(self, env: dict[str, str]) -> None:
        self.env = dict(env)
        self.proc = subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     env=self.env, text=True)

    def _serve(self, args: list[str], cwd: Path, env: dict[str, str], timeout: float):
        import tempfile

        assert self.proc is not None and self.proc.stdin is not None and self.proc.stdout is not None
        with tempfile.TemporaryDirectory(prefix="danlu-cli-") as tmp:
            out, err = Path(tmp, "out"), Path(tmp, "err")
            self.proc.stdin.write(json.dumps({"argv": args, "cwd": str(cwd), "env": env, "out": str(out),
                                              "err": str(err)}) + "\n")
            self.proc.stdin.flush()
            deadline = time.monotonic() + timeout
            pid = json.loads(self._line(None))["pid"]
            try:
                code = json.loads(self._line(deadline))["code"]
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self._line(None)
                raise subprocess.TimeoutExpired(["danlu", *args], timeout, _text(out), _text(err)) from None
            return subprocess.CompletedProcess(["danlu", *args], code, _text(out), _text(err))

    def _line(self, deadline: float | None) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        if deadline is not None:
            ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise subprocess.TimeoutExpired("danlu", 0)
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the preloaded danlu process ended (exit {self.proc.wait()}); its stderr is the test's")
        return line

    def stop(self) -> None:
        """End the preloader (its stdin closed, then by its PID) and wait for it."""
        if self.proc is None:
            return
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


def _imported(env: dict[str, str]) -> dict[str, str]:
    """What of an environment its imports could have read: all of it but pytest's name of the running test."""
    return {k: v for k, v in env.items() if k != "PYTEST_CURRENT_TEST"}


def _text(path: Path) -> str:
    return path.read_bytes().decode(locale.getpreferredencoding(False)) if path.exists() else ""


def _serve_forever() -> None:
    import gc
    import importlib
    import pkgutil

    for name in PRELOAD:
        importlib.import_module(name)
    import orchestrator

    for m in pkgutil.walk_packages(orchestrator.__path__, "orchestrator."):
        if not m.name.endswith("__main__"):
            importlib.import_module(m.name)
    # what is imported stays out of the forked processes' garbage collections (and their pages shared): Python's
    # advice for a process that forks workers (gc.freeze)
    gc.collect()
    gc.freeze()
    # the requests and answers travel on copies of stdin and stdout; a command's own stdio are its files
    requests = os.fdopen(os.dup(0), "r")
    answers = os.fdopen(os.dup(1), "w")
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    for line in requests:
        req = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            requests.close()
            answers.close()
            _command(req)
        answers.write(json.dumps({"pid": pid}) + "\n")
        answers.flush()
        _, status = os.waitpid(pid, 0)
        answers.write(json.dumps({"code": os.waitstatus_to_exitcode(status)}) + "\n")
        answers.flush()


def _command(req: dict) -> None:
    """In the forked process: `python -m orchestrator ARGV` in req's cwd and environment, output to req's files.
    It never returns: it ends as Python ends a program (SystemExit, or an uncaught exception, raised out of the
    preloader's main: its non-daemon threads joined, its atexit handlers run, its streams flushed)."""
    import runpy

    os.setsid()  # a process group of its own, as the caller's timeout kills it
    os.chdir(req["cwd"])
    os.environ.clear()
    os.environ.update(req["env"])
    for fd, path in ((1, req["out"]), (2, req["err"])):
        f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(f, fd)
        os.close(f)
    enc = locale.getpreferredencoding(False)  # unbuffered, as the tests' PYTHONUNBUFFERED=1 has it
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding=enc, write_through=True)
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding=enc, errors="backslashreplace",
                                  write_through=True)
    sys.path[0] = os.getcwd()  # as `python -m` has it
    if "numpy" in sys.modules:  # a fresh process's NumPy global generator is seeded afresh (random's is, at fork)
        sys.modules["numpy"].random.seed()
    sys.argv = ["danlu", *req["argv"]]
    runpy.run_module("orchestrator", run_name="__main__", alter_sys=True)
    raise SystemExit(0)


if __name__ == "__main__":
    _serve_forever()
