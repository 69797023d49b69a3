"""One driver per sweep: a lock on the sweep's storage, held for the driver's whole life.

Two drivers on one sweep (a command re-run in a second terminal, a Slurm requeue overlapping a driver that still
runs) would run every trial twice and write the same checkpoints, journal and MLflow runs. So a driver takes
`outputs/NAME/danlu/driver.lock` before anything else, and a second one exits 2 saying who holds it.

Two mechanisms, because no one of them holds everywhere clusters keep their files:
- `flock(2)` on the lock file. The kernel drops it when the holder dies, however it dies. On Linux NFS clients
  (2.6.12 and later) flock is carried out as an NFS byte-range lock, seen by every client of the server. On
  Lustre it is cluster-wide only with the `flock` mount option: with `localflock` it is seen on one node alone,
  and with `noflock` (the default) the call fails (ENOSYS). Some other filesystems refuse it (EOPNOTSUPP, ENOLCK).
- A lease file beside it (`driver.lease`: host, pid, the pid's start time, when it started), created with an
  atomic hard link and kept fresh by a heartbeat (its mtime, touched every `ttl/6` s). A lease is the holder's
  while its process lives (same host: the pid, with the same start time, exists) or, from another host, while
  its heartbeat is younger than `ttl` (measured on the filesystem's own clock, so that clocks of nodes that
  disagree do not matter). A stale lease is taken over, and the takeover is said.

A driver whose lease is taken from it (its heartbeat stalled past `ttl`, e.g. a frozen node) learns it at its
next heartbeat and stops its sweep gracefully (`on_lost`).
"""

from __future__ import annotations

import errno
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

LOCK, LEASE = "driver.lock", "driver.lease"
NO_FLOCK = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


class Busy(Exception):
    """The sweep is held by another driver."""

    def __init__(self, holder: dict | None, how: str):
        self.holder, self.how = holder or {}, how
        super().__init__(how)

    def describe(self, name: str) -> str:
        """Why a second driver may not run sweep `name`: who holds it, and what to do."""
        h = self.holder
        who = (f"host {h.get('host', '?')}, pid {h.get('pid', '?')}, since {h.get('since', '?')}" if h
               else "its holder did not say who it is")
        return (f"sweep {name} is running ({who}); {self.how}. Two drivers would run its trials twice. Wait for it "
                f"to end, or stop it (Ctrl-C, or `danlu stop` for a submitted sweep); this command then resumes it.")


def _proc_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


def _alive(lease: dict) -> bool:
    """The lease's process still lives (on this host: checked by pid and start time)."""
    pid = lease.get("pid")
    return isinstance(pid, int) and _proc_start(pid) == lease.get("pid_start")


class SweepLock:
    """`with SweepLock(dir, ttl_s, say) as lock:` holds the sweep for the block; raises Busy if it is held."""

    def __init__(self, directory: Path, ttl_s: float = 60.0, say: Callable[[str], None] = print,
                 on_lost: Callable[[str], None] | None = None):
        self.dir, self.ttl, self.say, self.on_lost = Path(directory), float(ttl_s), say, on_lost
        self.lease_path, self.lock_path = self.dir / LEASE, self.dir / LOCK
        self.me = {"host": socket.gethostname(), "pid": os.getpid(), "pid_start": _proc_start(os.getpid()),
                   "since": datetime.now().astimezone().isoformat(timespec="seconds"), "token": uuid.uuid4().hex}
        self.flock = False  # whether flock holds here (else the lease alone)
        self._fd = -1
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost: str | None = None

    # -- the lease file ------------------------------------------------------------------------------------
    def _read(self) -> tuple[dict | None, float | None]:
        """(the lease's contents, its heartbeat's age in s on the filesystem's clock); (None, None) if none."""
        try:
            text = self.lease_path.read_text()
            beat = self.lease_path.stat().st_mtime
        except FileNotFoundError:
            return None, None
        try:
            lease = json.loads(text)
        except ValueError:  # being written this instant (it is linked into place whole), or damaged
            lease = {"damaged": text[:200]}
        return lease, max(0.0, self._fs_now() - beat)

    def _fs_now(self) -> float:
        """Now, on the filesystem's clock (a shared filesystem's server may disagree with this node's)."""
        os.utime(self.lock_path)
        return self.lock_path.stat().st_mtime

    def _stale(self, lease: dict, age: float) -> bool:
        if "damaged" in lease:
            return age > self.ttl
        if lease.get("host") == self.me["host"]:
            return not _alive(lease)
        return age > self.ttl

    def _create(self) -> bool:
        """Put our lease in place atomically; False if another driver's appeared first."""
        tmp = self.dir / f".{LEASE}.{self.me['token']}"
        tmp.write_text(json.dumps(self.me))
        try:
            os.link(tmp, self.lease_path)  # atomic, and never over an existing lease (NFS included)
            return True
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)

    # -- taking and giving back ----------------------------------------------------------------------------
    def acquire(self, wait_s: float = 0.0) -> SweepLock:
        """Take the sweep, or raise Busy; with `wait_s`, keep trying that long first (a resubmitted driver whose
        predecessor's lock has not been given up yet: a lost node's NFS lock and lease outlive it a while)."""
        deadline, said = time.monotonic() + wait_s, False
        while True:
            try:
                return self._acquire()
            except Busy as busy:
                if time.monotonic() >= deadline:
                    raise
                if not said:
                    h = busy.holder
                    self.say(f"danlu: the sweep is held by another driver (host {h.get('host', '?')}, pid "
                             f"{h.get('pid', '?')}); waiting up to {wait_s:g} s for it to end")
                    said = True
                time.sleep(min(5.0, max(0.1, deadline - time.monotonic())))

    def _acquire(self) -> SweepLock:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        import fcntl

        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self.flock = True
        except BlockingIOError:
            lease, _ = self._read()
            self._close_fd()
            raise Busy(lease, f"its lock {self.lock_path} is held") from None
        except OSError as exc:
            if exc.errno not in NO_FLOCK:
                self._close_fd()
                raise
            self.flock = False  # this filesystem has no flock: the lease alone holds the sweep
        try:
            self._take_lease()
        except BaseException:
            self._unlock()
            raise
        self._thread = threading.Thread(target=self._beat, name="danlu-lease", daemon=True)
        self._thread.start()
        return self

    def _take_lease(self) -> None:
        for _ in range(5):
            if self._create():
                return
            lease, age = self._read()
            if lease is None or age is None:
                continue  # given back meanwhile: try again
            if not self._stale(lease, age):
                how = (f"its lease {self.lease_path} was renewed {age:.0f} s ago" if lease.get("host") != self.me["host"]
                       else "that process is alive")
                raise Busy(lease if "damaged" not in lease else None, how)
            aside = self.dir / f".{LEASE}.stale.{self.me['token']}"
            try:
                os.rename(self.lease_path, aside)  # only one of several drivers taking over wins this
            except FileNotFoundError:
                continue
            aside.unlink(missing_ok=True)
            why = (f"process {lease.get('pid')} is gone" if lease.get("host") == self.me["host"]
                   else f"no heartbeat for {age:.0f} s, more than storage.lock_ttl_s={self.ttl:g}")
            self.say(f"danlu: took over sweep lock {self.lease_path} from a driver that is gone (host "
                     f"{lease.get('host', '?')}, pid {lease.get('pid', '?')}, since {lease.get('since', '?')}: {why})")
        raise Busy(None, f"its lease {self.lease_path} keeps changing hands")

    def _beat(self) -> None:
        while not self._stop.wait(max(0.5, self.ttl / 6)):
            lease, _ = self._read()
            if lease is None or lease.get("token") != self.me["token"]:
                self.lost = (f"this driver's lease on the sweep ({self.lease_path}) was taken by another driver "
                             f"({(lease or {}).get('host', '?')}, pid {(lease or {}).get('pid', '?')}) after its "
                             "heartbeat stalled")
                if self.on_lost:
                    self.on_lost(self.lost)
                return
            try:
                os.utime(self.lease_path)
            except OSError:
                pass  # a full disk does not stop utime; another error: the next beat tries again

    def release(self) -> None:
        """Stop the heartbeat, remove the lease if it is still ours, and release the lock."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        lease, _ = self._read() if self.lease_path.exists() else (None, None)
        if lease is not None and lease.get("token") == self.me["token"]:
            self.lease_path.unlink(missing_ok=True)
        self._unlock()

    def _unlock(self) -> None:
        if self._fd >= 0 and self.flock:
            import fcntl

            try:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            except OSError:
                pass
        self._close_fd()

    def _close_fd(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> SweepLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()



def holder(directory: Path, ttl_s: float = 60.0) -> dict | None:
    """Who holds the sweep now, read from its lease without taking anything (for `danlu list`): the lease's
    contents while its process lives (this host) or its heartbeat is fresh (another host), else None."""
    path = Path(directory) / LEASE
    try:
        lease = json.loads(path.read_text())
        age = time.time() - path.stat().st_mtime
    except (OSError, ValueError):
        return None
    if not isinstance(lease, dict):
        return None
    if lease.get("host") == socket.gethostname():
        return lease if _alive(lease) else None
    return lease if age <= ttl_s else None
