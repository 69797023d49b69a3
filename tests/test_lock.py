"""One driver per sweep: the flock and the lease, a second driver refused with who holds the sweep, a dead one's
lock taken over (and said), another host's lease honoured until its heartbeat is stale, a lost lease noticed."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from orchestrator.storage import lock as L
from tests.conftest import ROOT, wait_for


def holder(tmp_path, seconds: float = 60) -> subprocess.Popen:
    """Another process that holds the sweep's lock, and prints 'held' once it does."""
    code = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from orchestrator.storage.lock import SweepLock
        with SweepLock({str(tmp_path)!r}, ttl_s=5):
            print("held", flush=True)
            time.sleep({seconds})
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


@pytest.mark.integration
def test_a_second_driver_is_refused_and_told_who_holds_the_sweep(tmp_path):
    proc = holder(tmp_path)
    try:
        with pytest.raises(L.Busy) as caught:
            L.SweepLock(tmp_path).acquire()
        text = caught.value.describe("night")
        assert f"pid {proc.pid}" in text and "sweep night is running" in text and "since" in text
    finally:
        proc.kill()
        proc.wait()
    said = []
    with L.SweepLock(tmp_path, say=said.append) as lk:  # its holder died: the kernel dropped the flock
        assert lk.flock and json.loads(lk.lease_path.read_text())["pid"] == os.getpid()
    assert said and "took over" in said[0] and f"process {proc.pid} is gone" in said[0]
    assert not (tmp_path / L.LEASE).exists()  # given back


def lease(tmp_path, **fields) -> None:
    (tmp_path / L.LEASE).write_text(json.dumps({"host": "node7", "pid": 4242, "pid_start": "1", "since": "earlier",
                                                "token": "theirs", **fields}))


@pytest.fixture
def no_flock(monkeypatch):
    """A filesystem without flock (Lustre mounted noflock, some NFS setups): the lease alone holds the sweep."""
    import fcntl

    def refuse(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", refuse)


def test_without_flock_the_lease_alone_refuses_a_second_driver(tmp_path, no_flock):
    with L.SweepLock(tmp_path) as first:
        assert not first.flock
        with pytest.raises(L.Busy) as caught:
            L.SweepLock(tmp_path).acquire()
        assert f"pid {os.getpid()}" in caught.value.describe("s") and "alive" in caught.value.describe("s")


def test_another_hosts_lease_holds_until_its_heartbeat_is_stale(tmp_path, no_flock):
    (tmp_path / L.LOCK).touch()
    lease(tmp_path)
    with pytest.raises(L.Busy) as caught:  # renewed just now, on another node
        L.SweepLock(tmp_path, ttl_s=30).acquire()
    assert "host node7, pid 4242" in caught.value.describe("s") and "renewed" in caught.value.describe("s")
    old = time.time() - 120
    os.utime(tmp_path / L.LEASE, (old, old))
    said = []
    with L.SweepLock(tmp_path, ttl_s=30, say=said.append):
        assert json.loads((tmp_path / L.LEASE).read_text())["token"] != "theirs"
    assert "no heartbeat for" in said[0] and "node7" in said[0]


def test_a_driver_whose_lease_is_taken_learns_it_and_stops(tmp_path):
    lost = []
    with L.SweepLock(tmp_path, ttl_s=0.6, on_lost=lost.append):
        lease(tmp_path, host="node9")  # another driver took it over (this one's heartbeat had stalled)
        wait_for(lambda: lost, timeout=30, what="the lost lease noticed")
    assert "taken by another driver" in lost[0] and "node9" in lost[0]
    assert (tmp_path / L.LEASE).exists()  # the new holder's lease is left alone


@pytest.mark.integration
def test_a_resubmitted_driver_waits_for_its_predecessors_lock(tmp_path):
    """The supervisor's resubmission sets DANLU_LOCK_WAIT_S: the new driver waits for the lock to be given up
    (here the holder ends after 2 s) instead of exiting 2 at once."""
    proc = holder(tmp_path, seconds=2)
    try:
        lk = L.SweepLock(tmp_path).acquire(wait_s=60)
        assert json.loads(lk.lease_path.read_text())["pid"] == os.getpid()
        lk.release()
    finally:
        proc.kill()
        proc.wait()
