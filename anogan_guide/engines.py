"""Where a sweep's runs execute: on this machine (`local`) or on a Ray cluster (`ray`).

Both engines take the same tasks, one `anogan-guide run` command line per (class, seed), run each
in a subprocess into its run folder (its output in that folder's sweep.log) and yield every task's
outcome as it finishes: None, or one line saying what failed and where its log is. The sweep
(sweep.py) plans the tasks and keeps the score; the engines only execute.

- `run_local`: `jobs` runs at a time in threads; one GPU each when there are several, else the
  CPU cores shared out between the jobs. Needs nothing but this package.
- `run_ray`: every run is one Ray task (`num_cpus`, `num_gpus` per run; Ray sets
  CUDA_VISIBLE_DEVICES), on a running cluster (`address`, e.g. "auto") or on a local instance
  it starts. The output folder must be storage every node sees; it is checked first. The
  guidebook must be installed at the same path on every node (each task runs `anogan-guide run`
  with its node's Python).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

INTERRUPT_GRACE_SECONDS = 10.0  # a stopped run gets this long to stop its kernel cleanly


class EngineError(RuntimeError):
    """The engine cannot start (no Ray, no cluster, storage not shared); one line, exit status 2."""


@dataclass(frozen=True)
class Task:
    """One run of a sweep: `anogan-guide run ARGS` into `folder`."""

    name: str  # e.g. "class 3 seed 0"
    folder: Path
    args: tuple[str, ...]  # the arguments after `anogan-guide run`


Outcome = tuple[Task, str | None]


# ---------------------------------------------------------------------------------------------
# One run, wherever it executes


def _last_error_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("anogan-guide")]
    return (errors or lines or ["no output"])[-1]


def _stop(process: subprocess.Popen) -> None:
    """Interrupt a run's process group (papermill then shuts its kernel down), kill it if it
    does not stop within the grace period."""
    for sig, wait in ((signal.SIGINT, INTERRUPT_GRACE_SECONDS), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
            process.wait(timeout=wait)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def execute_run(task: Task, env: dict[str, str] | None = None,
                stop: Callable[[], bool] | None = None) -> str | None:
    """Run `anogan-guide run` for one task with this interpreter, its output in
    <folder>/sweep.log. Returns None on success, else one line naming the failure and the log.
    Interrupted (Ctrl-C), or once `stop()` is true (checked every second: the local engine's
    Ctrl-C reaches only its main thread, a Ray sweep's reaches only its driver), it stops the
    run's processes first and raises KeyboardInterrupt."""
    task.folder.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "anogan_guide.cli", "run", *task.args]
    log = task.folder / "sweep.log"
    with open(log, "w") as f:
        f.write(" ".join(cmd) + "\n")
        f.flush()
        process = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, text=True,
                                   env={**os.environ, **(env or {})}, start_new_session=True)
        try:
            while True:  # wait in slices: `stop` is looked at between them
                try:
                    returncode = process.wait(timeout=1.0)
                    break
                except subprocess.TimeoutExpired:
                    if stop is not None and stop():
                        raise KeyboardInterrupt from None
        except BaseException:
            _stop(process)
            raise
    if returncode == 0:
        return None
    return f"{_last_error_line(log.read_text())} (log: {log})"


# ---------------------------------------------------------------------------------------------
# Local: threads on this machine


def gpu_count() -> int:
    """CUDA devices visible to the sweep (0 without CUDA)."""
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # a broken CUDA set-up: run on what the notebooks' device parameter picks
        return 0


def cpu_threads_per_job(jobs: int) -> int | None:
    """CPU threads for each of `jobs` parallel runs: the cores shared out, so that parallel runs
    do not oversubscribe the CPU (PyTorch's threads spin-wait, and two runs with a thread per
    core each ran several times slower than one after the other). None for a single job or
    when the user set OMP_NUM_THREADS."""
    if jobs <= 1 or "OMP_NUM_THREADS" in os.environ:
        return None
    return max(1, (os.cpu_count() or 1) // jobs)


def run_local(tasks: Sequence[Task], *, jobs: int = 1) -> Iterator[Outcome]:
    """`jobs` runs at a time on this machine: one GPU each when there are several
    (CUDA_VISIBLE_DEVICES), else OMP_NUM_THREADS = cores / jobs; a single job is left as the
    user set it up (and the sweep need not load torch to count GPUs). Yields (task, error or
    None)."""
    jobs = max(1, jobs)
    gpus = gpu_count() if jobs > 1 else 0
    slots: list[int | None] = [i % gpus if gpus else None for i in range(jobs)]
    free = list(range(jobs))
    threads = None if gpus else cpu_threads_per_job(jobs)
    lock = threading.Lock()
    stop = threading.Event()  # set when the sweep stops early: the running runs stop too

    def one(task: Task) -> str | None:
        with lock:
            slot = free.pop()
        env = {"ANOGAN_GUIDE_QUIET": "1"}  # the sweep's own bar is the one to watch
        if slots[slot] is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(slots[slot])
        if threads is not None:
            env["OMP_NUM_THREADS"] = str(threads)
        try:
            return execute_run(task, env, stop.is_set)
        finally:
            with lock:
                free.append(slot)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(one, task): task for task in tasks}
        try:
            for future in as_completed(futures):
                try:
                    error = future.result()
                except Exception as err:  # could not even start the subprocess
                    error = f"{type(err).__name__}: {err}"
                yield futures[future], error
        finally:
            stop.set()
            for future in futures:
                future.cancel()  # the ones not started


# ---------------------------------------------------------------------------------------------
# Ray: one task per run on a cluster


STOPPED = "stopped: the sweep was interrupted"


def _ray_run(task: Task, threads: int, stop_file: str) -> str | None:
    """A Ray task: one run on whichever node Ray chose (its CUDA_VISIBLE_DEVICES set by Ray).
    It stops its run once `stop_file` exists on the shared storage (the driver's Ctrl-C)."""
    stopped = Path(stop_file).exists
    if stopped():
        return STOPPED
    try:
        return execute_run(task, {"ANOGAN_GUIDE_QUIET": "1", "OMP_NUM_THREADS": str(threads)},
                           stopped)
    except KeyboardInterrupt:
        return STOPPED


def _storage_probe(marker: str, token: str, node_id: str) -> str | None:
    """On one node: read the driver's marker, write one back. None if both worked."""
    path = Path(marker)
    try:
        if path.read_text() != token:
            return f"{path} holds other content there"
        Path(f"{marker}.{node_id}").write_text(token)
    except OSError as err:
        return f"{type(err).__name__}: {err.strerror or err}"
    return None


def check_shared_storage(ray, out: Path, nodes: list[dict]) -> None:
    """A task on every node reads a marker the driver wrote in `out` and writes one back, which
    the driver reads; a node that cannot is named in one line (EngineError)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    token = uuid.uuid4().hex
    marker = out / f".anogan-guide-storage-{token[:12]}"
    marker.write_text(token)
    probe = ray.remote(_storage_probe)
    try:
        refs = {probe.options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(
            node["NodeID"], soft=False)).remote(str(marker), token, node["NodeID"]): node
            for node in nodes}
        for ref, node in refs.items():
            problem = ray.get(ref, timeout=120)
            back = Path(f"{marker}.{node['NodeID']}")
            if problem is None and (not back.is_file() or back.read_text() != token):
                problem = "what it wrote does not reach this machine"
            if problem:
                raise EngineError(
                    f"--out {out} is not storage every node sees: node "
                    f"{node['NodeManagerAddress']} ({problem}); put --out on a file system "
                    f"mounted at the same path on every node (NFS, a shared volume)")
    finally:
        for path in out.glob(f"{marker.name}*"):
            path.unlink(missing_ok=True)


def _connect(address: str | None):
    """Import Ray and join the cluster at `address` (None: start a local instance)."""
    token = os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH") or \
        (Path.home() / ".ray" / "auth_token").is_file()
    if address and token and "RAY_AUTH_MODE" not in os.environ:
        # `ray start` turns token authentication on when it finds a token (Ray makes one the
        # first time it starts a local instance), but a driver given HOST:PORT does not: send the
        # token (a cluster without authentication accepts it too). Ray reads this on import.
        os.environ["RAY_AUTH_MODE"] = "token"
    try:
        import ray
    except ImportError:
        raise EngineError("--engine ray needs Ray: pip install ray==2.60.0 (docs/sweeps.md's "
                          "set-up installs it), or use --engine local") from None
    # Ray's own notices (a local instance starting, token authentication) would bury the sweep's
    # lines; the runs' output is in their sweep.log anyway
    options = {"logging_level": logging.ERROR, "log_to_driver": False}
    try:
        if address:
            ray.init(address=address, **options)
        else:
            ray.init(include_dashboard=False, **options)
    except ConnectionError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise EngineError(f"no Ray cluster at --address {address} ({first}); start one with "
                          f"`ray start --head`, or leave out --address for a local "
                          f"instance") from None
    return ray


def run_ray(tasks: Sequence[Task], *, out: Path, address: str | None = None,
            cpus_per_run: float = 1.0, gpus_per_run: float = 0.0) -> Iterator[Outcome]:
    """Every task as one Ray task (cpus_per_run CPUs, gpus_per_run GPUs) on the cluster at
    `address` (None: a local instance). Yields (task, error or None) as runs finish; closed
    early (Ctrl-C), it has the outstanding tasks stop their runs' processes and return."""
    ray = _connect(address)
    try:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        fits = [n for n in nodes if n["Resources"].get("CPU", 0) >= cpus_per_run
                and n["Resources"].get("GPU", 0) >= gpus_per_run]
        if not fits:
            have = ", ".join(f"{n['NodeManagerAddress']}: {n['Resources'].get('CPU', 0):g} CPU "
                             f"{n['Resources'].get('GPU', 0):g} GPU" for n in nodes)
            raise EngineError(f"no node of the Ray cluster has {cpus_per_run:g} CPUs and "
                              f"{gpus_per_run:g} GPUs for a run ({have}); lower --cpus-per-run "
                              f"/ --gpus-per-run or add such a node")
        check_shared_storage(ray, out, nodes)
        remote = ray.remote(_ray_run).options(num_cpus=cpus_per_run, num_gpus=gpus_per_run,
                                              max_retries=0)
        threads = max(1, int(cpus_per_run))
        stop_file = out / f".anogan-guide-stop-{uuid.uuid4().hex[:12]}"
        pending = {remote.remote(task, threads, str(stop_file)): task for task in tasks}
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    task = pending.pop(ref)
                    try:
                        error = ray.get(ref)
                    except Exception as err:  # the task's worker or node died
                        error = f"Ray task failed: {str(err).strip().splitlines()[-1][:200]}"
                    yield task, error
        finally:
            if pending:
                # Stopped early: every outstanding task stops its run when it sees the stop file
                # (the queued ones return as they start). Not ray.cancel: Ray 2.60's driver can
                # abort on a check failure when a cancel crosses a task's completion.
                stop_file.touch()
                try:
                    ray.wait(list(pending), num_returns=len(pending),
                             timeout=INTERRUPT_GRACE_SECONDS + 20)
                finally:
                    stop_file.unlink(missing_ok=True)
    finally:
        ray.shutdown()
