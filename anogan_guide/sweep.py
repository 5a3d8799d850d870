"""`anogan-guide sweep`: the guidebook's notebooks over classes and seeds, then one results table.

    anogan-guide sweep --dataset mnist --classes 0-9 --seeds 0,1,2 \
        --methods anogan,ganomaly,gradcon,hybrid --jobs N --out DIR [-p NAME VALUE ...] [-f P.yaml]

Each (class, seed) is one run folder, DIR/<dataset>/class<c>_seed<s>/, filled by
`anogan-guide run` in a subprocess (00_data_prep plus the notebooks of the chosen methods), N at a
time; with several GPUs each job sees one (CUDA_VISIBLE_DEVICES). A run whose metrics.json already
holds every chosen method is skipped, so an interrupted sweep continues where it stopped. The
sweep reads back only metrics.json files: DIR/results.csv (one row per run and method) and
DIR/results.md (mean ± std per method and class, beside the published figures).
"""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .evaluate import read_metrics
from .runs import Run, atomic_path, progress

# method -> the notebooks that produce it (after 00_data_prep)
METHOD_NOTEBOOKS: dict[str, tuple[str, ...]] = {
    "anogan": ("01_dcgan_training", "02_latent_mapping"),
    "ganomaly": ("03_ganomaly",),
    "gradcon": ("04_gradcon",),
    "hybrid": ("05_hybrid",),
}
# method -> the metrics.json entries that count as "done" (02 names AnoGAN after its GAN loss)
METHOD_ENTRIES: dict[str, tuple[str, ...]] = {
    "anogan": ("anogan", "anogan-wgangp"),
    "ganomaly": ("ganomaly",),
    "gradcon": ("gradcon",),
    "hybrid": ("hybrid",),
}
DATA_PREP = "00_data_prep"
CSV_COLUMNS = ("dataset", "class", "seed", "method", "auroc", "auprc", "f1", "train_seconds",
               "score_seconds")

# Published one-class AUROC (anomaly = positive), mean over the ten classes and per class where
# the paper gives it, each with its protocol. Source: ../shared/design/ALGORITHMS.md ("Published
# one-class AUROC to compare with"), which collects them from: Deep SVDD (Ruff et al., ICML 2018),
# OCGAN (Perera et al., CVPR 2019), GradCon (Kwon et al., ECCV 2020), GeoTrans (Golan & El-Yaniv,
# NeurIPS 2018) and AnoGAN as re-run by later papers (Schlegl et al., IPMI 2017 has no such table).
FULL_TEST = "official train split of the normal class, full test set (as here)"
PUBLISHED: tuple[dict, ...] = (
    {"method": "AnoGAN (re-run by later papers)", "dataset": "mnist", "mean": 0.937,
     "protocol": "no official code; figures vary by paper"},
    {"method": "Deep SVDD", "dataset": "mnist", "mean": 0.948, "protocol": FULL_TEST,
     "per_class": (0.980, 0.997, 0.917, 0.919, 0.949, 0.885, 0.983, 0.946, 0.939, 0.965)},
    {"method": "OCGAN", "dataset": "mnist", "mean": 0.975, "protocol": FULL_TEST,
     "per_class": (0.998, 0.999, 0.942, 0.963, 0.975, 0.980, 0.991, 0.981, 0.939, 0.981)},
    {"method": "GradCon", "dataset": "mnist", "mean": 0.973,
     "protocol": "GradCon's 50/50 test (all test normals plus as many anomalies)"},
    {"method": "OCGAN", "dataset": "fashion-mnist", "mean": 0.924,
     "protocol": "80/20 split (not the full test set)"},
    {"method": "GradCon", "dataset": "fashion-mnist", "mean": 0.934,
     "protocol": "GradCon's 50/50 test"},
    {"method": "GeoTrans (self-supervised)", "dataset": "fashion-mnist", "mean": 0.935,
     "protocol": FULL_TEST},
    # CIFAR-10 per class in CIFAR10_CLASSES order (airplane ... truck)
    {"method": "AnoGAN (re-run by later papers)", "dataset": "cifar10", "mean": 0.615,
     "protocol": "no official code; figures vary by paper (~0.61; 0.615 is the mean of the "
                 "per-class figures shown)",
     "per_class": (0.640, 0.565, 0.648, 0.528, 0.670, 0.592, 0.625, 0.576, 0.723, 0.582)},
    {"method": "Deep SVDD", "dataset": "cifar10", "mean": 0.648, "protocol": FULL_TEST,
     "per_class": (0.617, 0.659, 0.508, 0.591, 0.609, 0.657, 0.677, 0.673, 0.759, 0.731)},
    {"method": "OCGAN", "dataset": "cifar10", "mean": 0.657, "protocol": FULL_TEST,
     "per_class": (0.757, 0.530, 0.640, 0.620, 0.723, 0.620, 0.723, 0.575, 0.820, 0.554)},
    {"method": "GradCon", "dataset": "cifar10", "mean": 0.664,
     "protocol": "GradCon's 50/50 test, images resized to 28x28 (an independent re-run: ~0.62)"},
    {"method": "GeoTrans (self-supervised)", "dataset": "cifar10", "mean": 0.860,
     "protocol": FULL_TEST},
)
SOURCE = "../shared/design/ALGORITHMS.md"
# class names of the datasets whose published per-class figures a folder dataset can be matched
# with by name (torchvision's CIFAR10 targets 0-9 are these, in this order)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")
NAMED_CLASSES = {"cifar10": CIFAR10_CLASSES}
DATASET_NAMES = {"cifar10": "CIFAR-10", "mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}


def published_source(dataset: str, classes: Sequence) -> str | None:
    """The dataset whose published figures apply to a sweep: the dataset itself when PUBLISHED
    lists it; for `folder` data whose classes are all class names of such a dataset (CIFAR-10's
    airplane ... truck, e.g. ../shared/data/cifar10-jpeg.tar.gz), that dataset; else None."""
    if any(p["dataset"] == dataset for p in PUBLISHED):
        return dataset
    if dataset == "folder" and classes:
        for name, names in NAMED_CLASSES.items():
            if all(str(c) in names for c in classes):
                return name
    return None


def published_class_index(source: str | None, normal_class) -> int | None:
    """Where a class sits in the published per-class figures of `source`: by name for datasets
    with named classes (folder data named like CIFAR-10), else by number (0-9); None if neither."""
    names = NAMED_CLASSES.get(source or "", ())
    if str(normal_class) in names:
        return names.index(str(normal_class))
    text = str(normal_class)
    return int(text) if text.isdigit() and int(text) < 10 else None


class SweepError(ValueError):
    """Bad sweep input; printed as one line, exit status 2."""


# ---------------------------------------------------------------------------------------------
# Parsing the command line


def parse_list(text: str, what: str, *, integers: bool = True) -> list:
    """'0-9' or '0,1,3' (or a mix, '0-2,7') as a list; non-numbers kept as names when allowed."""
    items: list = []
    for part in (p.strip() for p in str(text).split(",")):
        if not part:
            continue
        lo, dash, hi = part.partition("-")
        if dash and lo.strip().isdigit() and hi.strip().isdigit():
            lo_i, hi_i = int(lo), int(hi)
            if hi_i < lo_i:
                raise SweepError(f"{what} range {part!r} runs backwards; write it as {hi_i}-{lo_i}")
            items.extend(range(lo_i, hi_i + 1))
        elif part.lstrip("-").isdigit():
            items.append(int(part))
        elif integers:
            raise SweepError(f"{what} {part!r} is not a number; use e.g. 0-9 or 0,1,2")
        else:
            items.append(part)  # a folder dataset's class name
    if not items:
        raise SweepError(f"no {what} given; use e.g. 0-9 or 0,1,2")
    seen: list = []
    for item in items:
        if item not in seen:
            seen.append(item)
    return seen


def parse_methods(text: str) -> list[str]:
    """Comma-separated method names, each one of METHOD_NOTEBOOKS."""
    methods = parse_list(text, "method", integers=False)
    unknown = [m for m in methods if m not in METHOD_NOTEBOOKS]
    if unknown:
        raise SweepError(f"unknown method {', '.join(map(str, unknown))}; use any of: "
                         f"{', '.join(METHOD_NOTEBOOKS)}")
    return methods


# ---------------------------------------------------------------------------------------------
# Runs


@dataclass(frozen=True)
class SweepRun:
    """One (class, seed) of the sweep and its run folder."""

    dataset: str
    normal_class: int | str
    seed: int
    folder: Path

    @property
    def name(self) -> str:
        return f"class {self.normal_class} seed {self.seed}"


def plan_runs(dataset: str, classes: Sequence, seeds: Sequence[int], out: Path) -> list[SweepRun]:
    """One run folder per (class, seed): out/<dataset>/class<c>_seed<s>/."""
    return [SweepRun(dataset, c, s, out / dataset / f"class{c}_seed{s}")
            for c in classes for s in seeds]


def missing_methods(run: SweepRun, methods: Sequence[str]) -> list[str]:
    """The chosen methods that this run's metrics.json does not hold yet (for this very split)."""
    data = read_metrics(Run(run.folder))
    same = (data.get("dataset") == run.dataset and str(data.get("normal_class")) ==
            str(run.normal_class) and data.get("seed") == run.seed)
    done = set(data.get("methods", {})) if same else set()
    return [m for m in methods if not done.intersection(METHOD_ENTRIES[m])]


def notebooks_for(methods: Sequence[str]) -> list[str]:
    """00_data_prep, then the notebooks of the given methods in the guidebook's order."""
    names = {DATA_PREP} | {nb for m in methods for nb in METHOD_NOTEBOOKS[m]}
    return sorted(names)


def run_command(run: SweepRun, notebooks: Sequence[str], overrides: dict[str, str],
                params_file: str | None) -> list[str]:
    """The `anogan-guide run` command line of one run (the same interpreter as the sweep)."""
    cmd = [sys.executable, "-m", "anogan_guide.cli", "run", *notebooks,
           "-p", "dataset", run.dataset, "-p", "normal_class", str(run.normal_class),
           "-p", "seed", str(run.seed)]
    for name, value in overrides.items():
        cmd += ["-p", name, value]
    if params_file:
        cmd += ["-f", params_file]
    return cmd + ["--out", str(run.folder)]


def gpu_count() -> int:
    """CUDA devices visible to the sweep (0 without CUDA)."""
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # a broken CUDA set-up: run on what the notebooks' device parameter picks
        return 0


def _last_error_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("anogan-guide")]
    return (errors or lines or ["no output"])[-1]


def cpu_threads_per_job(jobs: int) -> int | None:
    """CPU threads for each of `jobs` parallel runs: the cores shared out, so that parallel runs
    do not oversubscribe the CPU (PyTorch's threads spin-wait, and two runs with a thread per
    core each ran several times slower than one after the other). None for a single job or
    when the user set OMP_NUM_THREADS."""
    if jobs <= 1 or "OMP_NUM_THREADS" in os.environ:
        return None
    return max(1, (os.cpu_count() or 1) // jobs)


def execute_run(run: SweepRun, cmd: list[str], gpu: int | None, threads: int | None = None
                ) -> str | None:
    """Run one `anogan-guide run` subprocess (with `threads` CPU threads when given); its output
    goes to <run>/sweep.log. Returns None on success, else one line saying what failed."""
    run.folder.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, ANOGAN_GUIDE_QUIET="1")  # the sweep's own bar is the one to watch
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    log = run.folder / "sweep.log"
    with open(log, "w") as f:
        f.write(" ".join(cmd) + "\n")
        f.flush()
        result = subprocess.run(cmd, stdout=f, stderr=subprocess.PIPE, text=True, env=env)
        f.write(result.stderr)
    if result.returncode == 0:
        return None
    return f"{_last_error_line(result.stderr)} (log: {log})"


def sweep(dataset: str, classes: Sequence, seeds: Sequence[int], methods: Sequence[str], out: Path,
          *, jobs: int = 1, overrides: dict[str, str] | None = None,
          params_file: str | None = None, declared: dict[str, set[str]] | None = None,
          echo=print) -> dict[str, str]:
    """Run every (class, seed) not finished yet, `jobs` at a time; returns {run name: error}
    for the runs that failed (the others go on). `declared` maps a notebook to its parameter
    names, so that each run gets only the -p values its notebooks declare."""
    overrides = overrides or {}
    runs = plan_runs(dataset, classes, seeds, out)
    todo = [(r, missing) for r in runs if (missing := missing_methods(r, methods))]
    if len(todo) < len(runs):
        echo(f"sweep: {len(runs) - len(todo)} of {len(runs)} runs already hold "
             f"{', '.join(methods)}; skipped")
    gpus = gpu_count()
    slots: list[int | None] = [i % gpus if gpus else None for i in range(max(1, jobs))]
    free = list(range(len(slots)))
    threads = cpu_threads_per_job(jobs)
    lock = threading.Lock()
    failures: dict[str, str] = {}

    def one(run: SweepRun, missing: list[str]) -> str | None:
        notebooks = notebooks_for(missing)
        names = set().union(*(declared.get(nb, set()) for nb in notebooks)) if declared else None
        mine = {k: v for k, v in overrides.items() if names is None or k in names}
        with lock:
            slot = free.pop()
        try:
            return execute_run(run, run_command(run, notebooks, mine, params_file), slots[slot],
                               None if gpus else threads)
        finally:
            with lock:
                free.append(slot)

    bar = progress(total=len(runs), initial=len(runs) - len(todo), desc="sweep", unit="run")
    with bar, ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {pool.submit(one, run, missing): run for run, missing in todo}
        for future in as_completed(futures):
            run = futures[future]
            try:
                error = future.result()
            except Exception as err:  # could not even start the subprocess
                error = f"{type(err).__name__}: {err}"
            if error:
                failures[run.name] = error
                bar.write(f"sweep: {dataset} {run.name} failed: {error}", file=sys.stderr)
            bar.update(1)
    return failures


# ---------------------------------------------------------------------------------------------
# Results


def collect(dataset: str, classes: Sequence, seeds: Sequence[int], out: Path) -> list[dict]:
    """One row per (run, method entry) of every run folder of the sweep that has metrics."""
    rows = []
    for run in plan_runs(dataset, classes, seeds, out):
        data = read_metrics(Run(run.folder))
        if str(data.get("normal_class")) != str(run.normal_class) or data.get("seed") != run.seed:
            continue
        for method, m in data.get("methods", {}).items():
            rows.append({"dataset": dataset, "class": run.normal_class, "seed": run.seed,
                         "method": method, **{k: m[k] for k in CSV_COLUMNS[4:]}})
    return rows


def write_csv(rows: list[dict], path: Path) -> None:
    """results.csv: one row per run and method, written atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{row[k]:.4f}" if k in ("auroc", "auprc", "f1") else row[k])
                         for k in CSV_COLUMNS})
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue())


def _mean_std(values: Sequence[float]) -> str:
    if not values:
        return "–"
    v = np.asarray(values, dtype=float)
    return f"{v.mean():.3f} ± {v.std():.3f}" if len(v) > 1 else f"{v.mean():.3f}"


def published_for(dataset: str) -> list[dict]:
    """The published figures for a dataset (PUBLISHED), in table order."""
    return [p for p in PUBLISHED if p["dataset"] == dataset]


def results_markdown(rows: list[dict], dataset: str, classes: Sequence, seeds: Sequence[int],
                     *, title: str = "") -> str:
    """results.md: per metric a table of mean ± std over seeds per class and method, the mean over
    classes (± std across the class means), and the published figures for the dataset."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    source = published_source(dataset, classes)
    published = published_for(source) if source else []
    where = {c: published_class_index(source, c) for c in classes}  # in the per-class figures
    lines = [f"# {title or f'Sweep results: {dataset}'}", "",
             f"Classes {', '.join(map(str, classes))}; seeds {', '.join(map(str, seeds))}. "
             f"Per class: mean ± std over seeds; **mean**: the mean of the class means ± their "
             f"std across classes. Protocol here: the normal class's training images, the full "
             f"test set; thresholds from validation "
             f"normals only.", ""]
    if not rows:
        return "\n".join(lines + ["No run of the sweep has finished a method yet.", ""])

    def table(metric: str, with_published: bool) -> list[str]:
        pub = published if with_published else []
        head = ["class", *methods, *(f"{p['method']} (published)" for p in pub)]
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        class_means: dict[str, list[float]] = {m: [] for m in methods}
        for c in classes:
            cells = []
            for m in methods:
                vals = [r[metric] for r in rows if r["method"] == m and str(r["class"]) == str(c)]
                cells.append(_mean_std(vals))
                if vals:
                    class_means[m].append(float(np.mean(vals)))
            for p in pub:
                per, i = p.get("per_class"), where[c]
                cells.append(f"{per[i]:.3f}" if per and i is not None and i < len(per) else "")
            out.append(f"| {c} | " + " | ".join(cells) + " |")
        means = [_mean_std(class_means[m]) for m in methods]
        # a published per-class table gives the mean over the same classes as ours
        same = [f"{np.mean([p['per_class'][where[c]] for c in classes]):.3f}"
                if p.get("per_class") and all(where[c] is not None and where[c] < len(
                    p["per_class"]) for c in classes) else "" for p in pub]
        out.append("| **mean** | " + " | ".join(means + same) + " |")
        if pub:
            out.append("| mean of all ten classes (published) | " + " | ".join(
                [""] * len(methods) + [f"{p['mean']:.3f}" for p in pub]) + " |")
        return out

    lines += ["## AUROC", ""] + table("auroc", True) + [""]
    if published:
        if source != dataset:
            name = DATASET_NAMES.get(source, source)
            lines += [f"The classes are {name}'s class names, so {name}'s published figures are "
                      f"shown beside them, matched by class name. They were measured on the "
                      f"official {name} files; a re-encoded copy (such as a JPEG archive) "
                      f"differs slightly from those.", ""]
        lines += ["Published figures (mean over the ten classes; per class where the paper gives "
                  f"it), from {SOURCE}, each with its protocol:", ""]
        lines += [f"* {p['method']}: {p['protocol']}." for p in published]
    else:
        lines += [f"No published figures for {dataset} ({SOURCE} lists MNIST, Fashion-MNIST and "
                  f"CIFAR-10)."]
    lines += ["", "## AUPRC", ""] + table("auprc", False)
    lines += ["", "## F1 (at the validation threshold)", ""] + table("f1", False)
    lines += ["", "## Time per run (seconds, mean over runs)", "",
              "| method | train | score |", "|---|---|---|"]
    for m in methods:
        mine = [r for r in rows if r["method"] == m]
        lines.append(f"| {m} | {np.mean([r['train_seconds'] for r in mine]):.1f} | "
                     f"{np.mean([r['score_seconds'] for r in mine]):.1f} |")
    return "\n".join(lines) + "\n"


def write_results(dataset: str, classes: Sequence, seeds: Sequence[int], out: Path) -> list[dict]:
    """Write DIR/results.csv and DIR/results.md from the run folders; returns the rows."""
    rows = collect(dataset, classes, seeds, out)
    write_csv(rows, out / "results.csv")
    with atomic_path(out / "results.md") as tmp:
        tmp.write_text(results_markdown(rows, dataset, classes, seeds))
    return rows
