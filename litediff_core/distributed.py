"""Sweeps on a Ray cluster: one Ray task per recipe, every result written into one run store.

    litediff sweep grid.yaml --store /shared/runs --ray auto            # a running cluster
    litediff sweep grid.yaml --store runs --ray local --ray-cpus 2      # a local Ray on this machine

Each task runs :func:`litediff_core.runs.run_recipe` on a worker with its CPU / GPU request
(``cpus_per_task`` threads for PyTorch, ``gpus_per_task`` GPUs). The store must be a folder
every worker sees (this machine for a local Ray, a shared file system for a cluster): runs are
built in hidden folders and renamed into place, so workers finishing together never mix their
files, and a finished run is reused by recipe key — a sweep stopped half-way and started again
runs only what is missing (training stages resume from their checkpoints).

Ray is an optional extra (``pip install 'litediff-lab[ray]'``). An address that does not answer
is refused within ``connect_timeout`` seconds instead of hanging.
"""

from __future__ import annotations

import socket
from typing import List, Optional

from .errors import LiteDiffError
from .progress import Progress, report

LOCAL = "local"


def _ray():
    try:
        import ray
    except ImportError:
        raise LiteDiffError("Ray is not installed: pip install 'litediff-lab[ray]' (or "
                            "pip install ray) to run sweeps on a cluster") from None
    return ray


def check_address(address: str, connect_timeout: float = 5.0) -> None:
    """Refuse (LiteDiffError) an address nothing answers at, without waiting for Ray's own
    retries. ``local`` and ``auto`` (a cluster started on this machine) pass."""
    if address in (LOCAL, "auto"):
        return
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise LiteDiffError(f"Ray address {address!r} is not host:port (e.g. 10.0.0.5:6379, "
                            f"ray://head:10001, auto or local)")
    try:
        with socket.create_connection((host, int(port)), timeout=connect_timeout):
            pass
    except OSError as e:
        raise LiteDiffError(f"no Ray cluster answers at {address} ({e.strerror or e}); start "
                            f"one with `ray start --head`, check the address, or use --ray "
                            f"local") from None


def _task(recipe: dict, store_root: str, device: str, threads: int) -> dict:
    """One recipe on one worker: the run's id, or the error that stopped it."""
    import torch

    from .recipes import Recipe
    from .runs import RunStore, run_recipe

    torch.set_num_threads(max(1, threads))
    r = Recipe.from_dict(recipe)
    try:
        return {"recipe": r.name, "run": run_recipe(r, RunStore(store_root), device=device).name}
    except LiteDiffError as e:
        return {"recipe": r.name, "error": str(e)}


def run_on_ray(recipes: List, store_root: str, address: str = LOCAL, cpus_per_task: int = 1,
               gpus_per_task: float = 0, device: str = "auto", local_cpus: Optional[int] = None,
               progress: Optional[Progress] = None, connect_timeout: float = 5.0) -> dict:
    """Run ``recipes`` as Ray tasks into the store at ``store_root``; ``{"runs", "failed"}``
    in the recipes' order. ``address``: ``local`` (start Ray on this machine with
    ``local_cpus`` CPUs), ``auto`` or ``host:port`` / ``ray://host:port`` of a cluster."""
    ray = _ray()
    if cpus_per_task < 1 or gpus_per_task < 0:
        raise LiteDiffError("each Ray task needs at least 1 CPU (and ≥ 0 GPUs)")
    check_address(address, connect_timeout)
    started = not ray.is_initialized()
    if started:
        kwargs = {"num_cpus": local_cpus} if address == LOCAL else {"address": address}
        ray.init(include_dashboard=False, log_to_driver=False, **kwargs)
    try:
        remote = ray.remote(num_cpus=cpus_per_task, num_gpus=gpus_per_task)(_task)
        pending = {remote.remote(r.to_dict(), str(store_root), device, cpus_per_task): i
                   for i, r in enumerate(recipes)}
        results: List[Optional[dict]] = [None] * len(recipes)
        waiting = list(pending)
        while waiting:
            ready, waiting = ray.wait(waiting, num_returns=1)
            for ref in ready:
                i = pending[ref]
                try:
                    results[i] = ray.get(ref)
                except Exception as e:  # noqa: BLE001 — a crashed worker: say which recipe
                    results[i] = {"recipe": recipes[i].name,
                                  "error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}
                report(progress, len(recipes) - len(waiting), len(recipes),
                       f"{results[i]['recipe']}: {'failed' if 'error' in results[i] else 'done'}")
    finally:
        if started:
            ray.shutdown()
    return {"runs": [r["run"] for r in results if "run" in r],
            "failed": [r for r in results if "error" in r]}
