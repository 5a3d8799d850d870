"""`anogan-guide score` on image files from disk against the notebook's in-memory scoring; and
its memory at 10,000 against 20,000 files.

    python benchmarks/bench_score_folder.py --run RUN --data DIR/cifar10-jpeg

RUN is a CIFAR-10 (JPEG) run folder with trained `ganomaly` and `gradcon` (e.g. 00_data_prep,
03_ganomaly and 04_gradcon with -p dataset folder -p data_root DIR/cifar10-jpeg). For each
method, in fresh subprocesses, all with the same OMP_NUM_THREADS:

* in memory: the notebook's scoring cell, `ganomaly.score(trained, split.test)` /
  `gradcon.score(trained, split.test)`, on the split's 10,000 test images already decoded;
* from disk: `anogan-guide score RUN DIR/test --method M` (10,000 JPEG files: finding, decoding,
  resizing, scoring, the CSV), with `--workers` decoding processes; its images/s counts the
  command's whole wall time, and also that time less the same command's on one image (start-up:
  importing torch, loading the networks);
* the command's peak resident memory (the process and its decoding workers together, sampled
  every 20 ms) on 10,000 and on 20,000 files (the test set and 10,000 training images).

Prints a table of images/s, the ratio disk / memory (the target: at least 1 / 1.5) and the peak
memory ratio 20,000 / 10,000 (the target: within 10%).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

IN_MEMORY = r"""
import json, sys, time
import torch
import anogan_guide as ag
from anogan_guide import ganomaly, gradcon
run, method = ag.Run(__import__("pathlib").Path(sys.argv[1])), sys.argv[2]
saved = json.loads(run.split_path.read_text())
split = ag.load_split(run, dataset=saved["dataset"], normal_class=saved["normal_class"],
                      data_root=saved["data_root"], image_size=saved["image_size"],
                      seed=saved["seed"], val_fraction=saved["val_fraction"])
module = {"ganomaly": ganomaly, "gradcon": gradcon}[method]
trained = module.load(run, "cpu")
kw = {"grad_weight": json.loads(run.metrics_path.read_text())["methods"]["gradcon"]["params"]
      ["grad_weight"]} if method == "gradcon" else {}
start = time.perf_counter()
table = module.score(trained, split.test, **kw)   # the notebook's scoring cell
seconds = time.perf_counter() - start
print(json.dumps({"n": len(table["score"]), "seconds": seconds}))
"""


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def run_measured(command: list[str], env: dict) -> tuple[float, int, str]:
    """(wall seconds, peak resident bytes of the process tree, stdout) of a command."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    watched, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:
            peak = max(peak, tree_rss(watched))
        except psutil.NoSuchProcess:
            break
        time.sleep(0.02)
    out, err = proc.communicate()
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({proc.returncode}): {err.strip()[-500:]}")
    return seconds, peak, out


def link_files(files: list[Path], folder: Path) -> Path:
    folder.mkdir(parents=True)
    for i, f in enumerate(files):
        (folder / f"{i:05d}{f.suffix}").symlink_to(f)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True, help="a CIFAR-10 (JPEG) run folder")
    parser.add_argument("--data", required=True, help="the extracted cifar10-jpeg folder")
    parser.add_argument("--methods", default="ganomaly,gradcon")
    parser.add_argument("--workers", default="0,1", help="decoding processes to compare")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of every run")
    args = parser.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "ANOGAN_GUIDE_QUIET": "1"}
    cli = [sys.executable, "-m", "anogan_guide.cli", "score", args.run]
    data = Path(args.data)
    test = sorted((data / "test").rglob("*.jpg"))
    train = sorted((data / "train").rglob("*.jpg"))[::5][:10_000]
    assert len(test) == 10_000 and len(train) == 10_000, (len(test), len(train))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        small = link_files(test, tmp / "n10000")
        link_files(train, tmp / "extra")
        one = link_files(test[:1], tmp / "one")
        for method in args.methods.split(","):
            _, _, out = run_measured([sys.executable, "-c", IN_MEMORY, args.run, method], env)
            memory = json.loads(out)
            memory_rate = memory["n"] / memory["seconds"]
            for workers in (int(w) for w in args.workers.split(",")):
                opts = ["--method", method, "--workers", str(workers), "--device", "cpu"]
                start_s, _, _ = run_measured(cli + [str(one), "--out", str(tmp / "1.csv")]
                                             + opts, env)
                s10, peak10, _ = run_measured(cli + [str(small), "--out", str(tmp / "a.csv")]
                                              + opts, env)
                s20, peak20, _ = run_measured(cli + [str(small), str(tmp / "extra"), "--out",
                                                     str(tmp / "b.csv")] + opts, env)
                rows.append((method, workers, memory_rate, 10_000 / s10,
                             10_000 / max(s10 - start_s, 1e-9), peak10, peak20, start_s))
    print(f"OMP_NUM_THREADS={args.threads}; run {args.run}; {os.cpu_count()} CPUs")
    print("| method | workers | in memory img/s | command img/s (whole wall) | command img/s "
          "(less start-up) | disk / memory | start-up s | peak MB 10k | peak MB 20k | "
          "20k / 10k |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for method, workers, mem, whole, less, p10, p20, start_s in rows:
        print(f"| {method} | {workers} | {mem:.0f} | {whole:.0f} | {less:.0f} | "
              f"{less / mem:.2f} | {start_s:.1f} | {p10 / 1e6:.0f} | {p20 / 1e6:.0f} | "
              f"{p20 / p10:.3f} |")


if __name__ == "__main__":
    main()
