"""`danlu ui`: MLflow's UI on a local store, and the addresses of a sweep in it, once the server answers.

- A port that is taken is bad input, found before anything starts (exit 2, naming the port and --port), and
  again if another server wins the port while MLflow starts (the listening socket must be MLflow's, in this
  process group: a /health answer from someone else's server is not taken for ours).
- MLflow's server runs in a process group of its own, which `danlu ui` owns: Ctrl-C or SIGTERM ends the whole
  group (MLflow's UI starts worker processes of its own), and nothing is left behind.
- The addresses are printed once /health answers (a loaded machine takes a minute): the sweep's runs table, its
  parent run and its report, each opening in MLflow's model-training view from a fresh browser
  (orchestrator/tracking/links.py).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from orchestrator.errors import BadInput


def _tail(log: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(unreadable)"


def check_port(port: int) -> None:
    """BadInput (exit 2) if 127.0.0.1:`port` is taken, naming a free one."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            free = _free_port()
            raise BadInput(f"--port {port}: 127.0.0.1:{port} is taken ({exc.strerror or exc}): another server listens "
                           f"there. Choose another port, e.g. danlu ui --port {free}.") from None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listener_pgid(port: int) -> int | None:
    """The process group of whatever listens on 127.0.0.1:port (None if it cannot be told)."""
    import psutil

    try:
        conns = psutil.net_connections(kind="tcp")
    except (psutil.AccessDenied, OSError):
        return None
    for c in conns:
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid:
            try:
                return os.getpgid(c.pid)
            except OSError:
                return None
    return None


def _up(port: int) -> bool:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).status == 200
    except OSError:
        return False


def stop_group(proc: subprocess.Popen, grace_s: float = 20.0) -> None:
    """End the server's whole process group: SIGTERM, then SIGKILL what is left."""
    import psutil

    members = [p for p in psutil.process_iter() if _pgid(p.pid) == proc.pid]
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    _, alive = psutil.wait_procs(members, timeout=grace_s)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=grace_s)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def server_env() -> dict[str, str]:
    """The environment of an MLflow server danlu starts. MLflow's job execution (a job runner and Huey consumers,
    7 Python processes and 20-25 CPU-s at each start here, more memory than the server) runs GenAI jobs: judges,
    prompt optimisation, trace roll-ups. Nothing danlu logs or shows uses them, so it is off unless the user's
    environment turns it on (MLFLOW_SERVER_ENABLE_JOB_EXECUTION=true)."""
    return {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ}


def serve(uri: str, port: int, addresses, out=None, start_timeout_s: float = 600.0) -> int:
    """Run MLflow's UI for `uri` on 127.0.0.1:port until Ctrl-C or SIGTERM; `addresses()` gives the lines to print
    once it answers. Exit 0 when stopped, 2 when the port was taken, 1 when MLflow could not start."""
    out = out or sys.stdout
    check_port(port)
    log = Path(tempfile.gettempdir()) / f"danlu-ui-{port}-{os.getpid()}.log"  # MLflow's own output: its workers'
    # tracebacks are not for the terminal (a lost port race prints eight); said where it is when it matters
    print(f"danlu: starting MLflow's UI for {uri} on http://127.0.0.1:{port} (Ctrl-C stops it; its log: {log})...",
          file=out, flush=True)
    with open(log, "w") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host",
                                 "127.0.0.1", "--port", str(port)], start_new_session=True, stdout=sink,
                                stderr=subprocess.STDOUT,
                                env={**server_env(), "PYTHONWARNINGS": "ignore::DeprecationWarning"})
    def stop(signum, frame):  # SIGTERM ends it as Ctrl-C does
        raise KeyboardInterrupt

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        deadline = time.monotonic() + start_timeout_s
        while not _up(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                stop_group(proc)
                taken = _listener_pgid(port) is not None
                print("danlu: error: MLflow's UI did not start" + (
                    f": --port {port}: 127.0.0.1:{port} was taken meanwhile by another server; choose another --port"
                    if taken else f" (exit {proc.returncode}); the end of its log ({log}):\n" + _tail(log)),
                    file=sys.stderr, flush=True)
                if taken:
                    log.unlink(missing_ok=True)
                return 2 if taken else 1
            time.sleep(0.5)
        owner = _listener_pgid(port)
        if owner is not None and owner != proc.pid:  # another server answered: ours lost the port
            stop_group(proc)
            log.unlink(missing_ok=True)
            print(f"danlu: error: --port {port}: another server took 127.0.0.1:{port} while MLflow started; choose "
                  "another --port", file=sys.stderr, flush=True)
            return 2
        print(f"danlu: MLflow's UI is up at http://127.0.0.1:{port}", file=out, flush=True)
        for line in addresses():
            print(line, file=out, flush=True)
        proc.wait()
        print(f"danlu: MLflow's UI ended (exit {proc.returncode}); the end of its log ({log}):\n{_tail(log)}",
              file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        stop_group(proc)
        log.unlink(missing_ok=True)
        print("\ndanlu: MLflow's UI stopped", file=out, flush=True)
        return 0
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        if proc.poll() is None:
            stop_group(proc)
