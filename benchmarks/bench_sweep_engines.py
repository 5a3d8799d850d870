"""The same 8-run sweep on `--engine local --jobs 2` and on `--engine ray` (2 CPUs, one per run),
side by side in one run: Ray's overhead as a share of the wall time.

    python benchmarks/bench_sweep_engines.py                      # digits classes 0-7, CI sizes
    python benchmarks/bench_sweep_engines.py -f params/demo.yaml --methods gradcon --rounds 2

Each round times the whole `anogan-guide sweep` command once per engine, in fresh output
folders, the order rotating between rounds:
- `local`: `--engine local --jobs 2` (1 thread per run);
- `ray-cluster`: `--engine ray --address` on a 2-CPU cluster started beforehand with
  `ray start --head --num-cpus=2` (as on a cluster that is already up; starting it is timed
  apart);
- `ray-local`: `--engine ray` without `--address`: the sweep starts and stops a local Ray
  instance itself, and that is in its time.
Ray runs get 1 CPU each (so also 1 thread). The same runs with the same thread counts must give
the same AUROCs on every engine, which is checked. Take the figures on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from anogan_guide.runs import REPO_ROOT


def timed_sweep(engine: list[str], args: argparse.Namespace, out: Path) -> float:
    cmd = [sys.executable, "-m", "anogan_guide.cli", "sweep", "--dataset", "digits",
           "--classes", args.classes, "--seeds", "0", "--methods", args.methods,
           "-f", str(Path(args.params_file).resolve()), *engine, "--out", str(out)]
    env = dict(os.environ, ANOGAN_GUIDE_QUIET="1", RAY_USAGE_STATS_ENABLED="0")
    start = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"{' '.join(engine)} failed: {result.stderr.strip().splitlines()[-1]}")
    return seconds


def start_cluster(temp_dir: str) -> tuple[str, float]:
    """`ray start --head --num-cpus=2` on a free port; returns (address, seconds it took)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.perf_counter()
    subprocess.run([str(Path(sys.executable).with_name("ray")), "start", "--head",
                    f"--port={port}", "--node-ip-address=127.0.0.1", "--num-cpus=2",
                    "--num-gpus=0", f"--temp-dir={temp_dir}", "--include-dashboard=false",
                    "--disable-usage-stats"], check=True, capture_output=True)
    return f"127.0.0.1:{port}", time.perf_counter() - start


def stop_cluster(temp_dir: str) -> None:
    """Stop the processes of the cluster started in `temp_dir` (not any other Ray)."""
    for sig in (15, 9):
        for entry in Path("/proc").iterdir():
            try:
                if entry.name.isdigit() and temp_dir.encode() in (entry / "cmdline").read_bytes():
                    os.kill(int(entry.name), sig)
            except (OSError, ProcessLookupError):
                continue
        time.sleep(3)


def aurocs(out: Path) -> dict:
    with open(out / "results.csv") as f:
        return {(r["class"], r["method"]): r["auroc"] for r in csv.DictReader(f)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-f", dest="params_file", default=str(REPO_ROOT / "params" / "ci.yaml"))
    parser.add_argument("--classes", default="0-7", help="digits classes: one run each")
    parser.add_argument("--methods", default="ganomaly,gradcon")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    if (os.cpu_count() or 1) != 2:
        print(f"note: this machine has {os.cpu_count()} cores; the local Ray instance gets all "
              f"of them, the other engines 2 runs at a time")
    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths
    try:
        address, started = start_cluster(temp_dir)
        print(f"ray start --head --num-cpus=2: {started:.1f} s (not in the ray-cluster times)")
        engines = {"local": ["--engine", "local", "--jobs", "2"],
                   "ray-cluster": ["--engine", "ray", "--address", address, "--cpus-per-run", "1"],
                   "ray-local": ["--engine", "ray", "--cpus-per-run", "1"]}
        times: dict[str, list[float]] = {name: [] for name in engines}
        with tempfile.TemporaryDirectory(prefix="bench-engines-") as tmp:
            for r in range(args.rounds):
                names = list(engines)
                order = names[r % len(names):] + names[:r % len(names)]
                outs = {}
                for name in order:
                    outs[name] = Path(tmp) / f"{name}{r}"
                    times[name].append(timed_sweep(engines[name], args, outs[name]))
                    print(f"round {r + 1}: {name:11s} {times[name][-1]:7.1f} s", flush=True)
                same = all(aurocs(outs[name]) == aurocs(outs["local"]) for name in engines)
                print(f"round {r + 1}: same AUROCs on every engine: {same}")
                n_runs = len(aurocs(outs["local"])) // len(args.methods.split(","))
    finally:
        stop_cluster(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
    best = {name: min(t) for name, t in times.items()}
    print(f"\n{n_runs} runs ({args.methods}, {Path(args.params_file).name}), best of "
          f"{args.rounds}: " + ", ".join(f"{name} {t:.1f} s" for name, t in best.items()))
    for name in ("ray-cluster", "ray-local"):
        print(f"{name} / local = {best[name] / best['local']:.3f}; Ray's overhead = "
              f"{(best[name] - best['local']) / best[name]:.1%} of its wall time")


if __name__ == "__main__":
    main()
