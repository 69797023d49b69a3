"""Where the trials run: an embedded local Ray, or an existing cluster's address; and whether they fit.

The fit check happens before anything launches: a trial that asks for more than the largest node
offers would otherwise sit PENDING forever.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from orchestrator.config import checks
from orchestrator.errors import BadInput

RESOURCE_KEYS = ("cpu", "gpu", "memory_mb", "custom")  # what a trial's `resources` may say


def trial_resources(res) -> dict[str, float]:
    """Per-trial resources from the `resources` config, validated the way Ray will read them; a key it does not
    know is refused (`+resources.memory=...` would otherwise be logged and do nothing)."""
    unknown = sorted(str(k) for k in res if k not in RESOURCE_KEYS)
    if unknown:
        raise BadInput(f"resources.{unknown[0]}: not a setting of resources; valid: {', '.join(RESOURCE_KEYS)} "
                       "(resources.custom.NAME=N asks for a custom Ray resource that nodes declare; "
                       "resources.memory_mb=N reserves and holds a trial's memory).")
    cpu, gpu = res.get("cpu", 1), res.get("gpu", 0)
    for key, v in (("cpu", cpu), ("gpu", gpu)):
        checks.number(f"resources.{key}", v, 0, note="(e.g. cpu=1, gpu=0.25 or gpu=2)")
    if gpu > 1 and gpu != int(gpu):
        raise BadInput(f"resources.gpu={gpu}: above 1, a trial takes whole GPUs (2, not {gpu}).")
    if cpu == 0 and gpu == 0:
        raise BadInput("resources: a trial needs some cpu or gpu (e.g. resources.cpu=1).")
    out = {"CPU": float(cpu), "GPU": float(gpu)}
    memory = checks.number("resources.memory_mb", res.get("memory_mb"), 1, optional=True,
                           note="(a trial's memory: reserved with Ray and held while it runs; null: no limit)")
    if memory is not None:
        out["memory"] = float(memory) * 2**20  # Ray's memory resource, in bytes
    for name, amount in (res.get("custom") or {}).items():
        checks.number(f"resources.custom.{name}", amount, 0, note=f"of the custom Ray resource {name} (nodes declare "
                      f"it with ray start --resources='{{\"{name}\": 4}}')")
        out[str(name)] = float(amount)
    return out


def detected_gpus() -> int:
    """GPUs this machine would give an embedded Ray: CUDA_VISIBLE_DEVICES if set, else nvidia-smi."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    if not shutil.which("nvidia-smi"):
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def local_capacity(cluster) -> dict[str, float]:
    """What the embedded local Ray will offer: CPU and GPU from cluster.num_cpus/num_gpus, or this machine's."""
    cpus = cluster.get("num_cpus")
    gpus = cluster.get("num_gpus")
    return {
        "CPU": float(cpus if cpus is not None else len(os.sched_getaffinity(0))),
        "GPU": float(gpus if gpus is not None else detected_gpus()),
        "memory": _ray_memory(),
        **{str(k): float(v) for k, v in (cluster.get("resources") or {}).items()},
    }


def _ray_memory() -> float:
    """The `memory` resource a local Ray declares, in bytes: the memory available at its start less its object
    store (30 % of it by default), so about 70 % of what is available now."""
    import psutil

    return 0.7 * psutil.virtual_memory().available


def check_fit(need: dict[str, float], nodes: dict[str, dict[str, float]]) -> None:
    """Raise BadInput unless some node can hold one trial. nodes: name -> its resources."""
    for total in nodes.values():
        if all(total.get(k, 0.0) >= v for k, v in need.items() if v > 0):
            return
    name, largest = max(nodes.items(), key=lambda kv: (kv[1].get("GPU", 0), kv[1].get("CPU", 0)))
    def amount(k: str, v: float) -> str:  # Ray counts memory in bytes; a user sets resources.memory_mb
        return f"memory_mb={v / 2**20:.0f}" if k == "memory" else f"{k}={v:g}"

    asked = ", ".join(amount(k, v) for k, v in need.items() if v > 0)
    offers = ", ".join(amount(k, largest.get(k, 0)) for k in need if need[k] > 0)
    hint = (" Set cluster.num_gpus to declare logical GPUs, or resources=cpu."
            if need.get("GPU") and list(nodes) == ["local machine"] else "")
    raise BadInput(f"resources: a trial asks for {asked}, but the largest node ({name}) offers {offers}.{hint}")


def trials_at_once(need: dict[str, float], nodes: dict[str, dict[str, float]]) -> int:
    """How many trials asking `need` each the nodes hold at once (each node: its smallest ratio of offered to
    asked over the resources a trial asks for), summed over the nodes."""
    total = 0
    for offers in nodes.values():
        fits = [offers.get(k, 0.0) / v for k, v in need.items() if v > 0]
        total += int(min(fits) + 1e-9) if fits else 0
    return total


def cluster_nodes() -> dict[str, dict[str, float]]:
    """The live nodes of the connected Ray cluster: a readable name -> the resources each offers."""
    import ray

    return {f"{n['NodeManagerAddress']} ({n['NodeID'][:8]})": n["Resources"] for n in ray.nodes() if n.get("Alive")}


def check_address(cluster) -> None:
    """Ray Client (ray://) runs Tune's driver loop on the cluster, away from danlu's MLflow writer and
    journal, and its Tuner cannot be restored with new callbacks: refused before anything launches."""
    address = str(cluster.get("address") or "")
    if address.startswith("ray://"):
        raise BadInput(f"cluster.address={address}: Ray Client addresses are not supported (Tune would run on the "
                       "cluster, apart from danlu's tracking). Give the head's GCS address (HEAD:6379) from a node "
                       "of the cluster, or run `danlu submit`, which starts the sweep's driver on the cluster.")


def check_local_fit(cluster, need: dict[str, float]) -> None:
    """For an embedded Ray, check before starting it (an existing cluster is checked once connected)."""
    if not cluster.get("address"):
        check_fit(need, {"local machine": local_capacity(cluster)})


@contextmanager
def ray_session(cluster, need: dict[str, float], verbose: bool = False) -> Iterator[None]:
    """Start an embedded Ray (cluster.address null) or connect to one; check the trial fits; shut down after."""
    import ray

    if not verbose:
        # Ray's start-up notice (token auth is on: good, and said in docs/clusters.md) and Tune's complaint that
        # result.json is absent (danlu logs results to MLflow instead) are noise in danlu's own view.
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
        logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
        # "Resume with Tuner.restore", "Trials did not complete": danlu's own summary says how and which
        logging.getLogger("ray.tune.tune").setLevel(logging.CRITICAL)
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0, Tune then prints no tables at all
        # a failed trial's traceback goes to its error.txt and MLflow; the terminal gets one line (TrialRuns)
        os.environ.setdefault("TUNE_PRINT_ALL_TRIAL_ERRORS", "0")
        # a trial's failure is Tune's to handle and danlu's to say; Ray's driver would print its traceback again
        # ("Unhandled error") when the failed call's result is dropped unread
        os.environ.setdefault("RAY_IGNORE_UNHANDLED_ERRORS", "1")
        from orchestrator.ray_internals import quiet_worker_deaths

        quiet_worker_deaths()  # "(raylet) A worker died...": danlu names the trial and its retry itself
    if ray.is_initialized():  # a caller's own Ray (a notebook, a benchmark): use it, leave it running
        check_fit(need, cluster_nodes())
        yield
        return
    kwargs: dict[str, Any] = dict(log_to_driver=verbose, include_dashboard=False, configure_logging=True,
                                  logging_level=logging.INFO if verbose else logging.WARNING)
    if cluster.get("address"):
        connect(str(cluster.address), verbose)
    else:
        # address="local": always a Ray of our own, never one that `ray start` left running on this machine
        custom = {str(k): float(v) for k, v in (cluster.get("resources") or {}).items()} or None
        ray.init(address="local", num_cpus=cluster.get("num_cpus"), num_gpus=cluster.get("num_gpus"), resources=custom,
                 **kwargs)
    try:
        if cluster.get("address"):
            check_fit(need, cluster_nodes())
        yield
    finally:
        ray.shutdown()


def connect(address: str, verbose: bool) -> None:
    """Connect to the Ray cluster at a GCS address (HEAD:6379), after a TCP check that fails within seconds where
    nothing listens; BadInput naming cluster.address where it does not answer or refuses (Ray raises several kinds
    of error, and would first retry for 20 s)."""
    import socket

    import ray

    host, _, port = address.rpartition(":")
    if host and port.isdigit():
        try:
            socket.create_connection((host, int(port)), timeout=5).close()
        except OSError as exc:
            raise BadInput(f"cluster.address={address}: nothing answers there ({exc.strerror or exc}).") from None
    try:
        ray.init(address=address, log_to_driver=verbose, logging_level=logging.INFO if verbose else logging.ERROR)
    except Exception as exc:  # noqa: BLE001 - ConnectionError, an auth refusal: Ray raises several kinds
        raise BadInput(f"cluster.address={address}: Ray could not connect, or the auth token was refused "
                       f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]})") from None


def check_shared_storage(storage_dir) -> None:
    """On a cluster of several nodes, every node must see the sweep's storage (trials write their
    checkpoints there, and a trial retried elsewhere reads them back). A marker file written here is
    looked for by a zero-CPU task pinned to each node."""
    import uuid

    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) < 2:
        return
    marker = storage_dir / f".danlu-shared-{uuid.uuid4().hex[:8]}"
    marker.write_text("")

    @ray.remote(num_cpus=0)
    def sees(path: str) -> bool:
        return os.path.exists(path)

    try:
        checks = {n["NodeManagerAddress"] + f" ({n['NodeID'][:8]})": sees.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(str(marker))
            for n in nodes}
        blind = [name for name, ref in checks.items() if not ray.get(ref, timeout=120)]
    finally:
        marker.unlink(missing_ok=True)
    if blind:
        raise BadInput(
            f"output_dir: {storage_dir.parent} is not visible from node(s) {', '.join(blind)}. A sweep on several "
            "nodes needs storage every node can reach: a shared filesystem path (output_dir=/shared/danlu) "
            "or a URI Ray can write to.")
