"""A sweep's results: DIR/results.csv (one row per run and method) and DIR/results.md (mean ± std
per method and class, beside the published figures with their protocols), read back from the run
folders' metrics.json files only.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .evaluate import read_metrics
from .runs import Run, atomic_path
from .sweep import plan_runs, runs_on_disk, split_matches

CSV_COLUMNS = ("dataset", "class", "seed", "method", "auroc", "auprc", "f1", "dev_auroc",
               "dev_auprc", "train_seconds", "score_seconds", "pixel_auroc")
# pixel_auroc: the anomaly maps against ground-truth masks, where the data has them (maps.py)
FIGURES = ("auroc", "auprc", "f1", "dev_auroc", "dev_auprc", "pixel_auroc")

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
     "protocol": FULL_TEST + "; 72 transformations, Wide ResNet 16-8 on a GPU (per class "
                 "second-hand)",
     "per_class": (0.747, 0.957, 0.781, 0.724, 0.878, 0.878, 0.834, 0.955, 0.933, 0.913)},
    {"method": "RotNet + translations (self-supervised)", "dataset": "cifar10", "mean": 0.900,
     "protocol": FULL_TEST + "; Hendrycks et al., NeurIPS 2019: rotation and translation "
                 "heads, Wide ResNet on a GPU"},
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




def collect(dataset: str, classes: Sequence, seeds: Sequence[int], out: Path) -> list[dict]:
    """One row per (run, method entry) of every run folder of the sweep that has metrics."""
    rows = []
    for run in plan_runs(dataset, classes, seeds, out):
        data = read_metrics(Run(run.folder))
        if not split_matches(run, data):
            continue
        for method, m in data.get("methods", {}).items():
            dev = m.get("dev") or {}
            rows.append({"dataset": dataset, "class": run.normal_class, "seed": run.seed,
                         "method": method, "auroc": m["auroc"], "auprc": m["auprc"], "f1": m["f1"],
                         "dev_auroc": dev.get("auroc"), "dev_auprc": dev.get("auprc"),
                         "train_seconds": m["train_seconds"], "score_seconds": m["score_seconds"],
                         "pixel_auroc": m.get("pixel_auroc")})
    return rows


def table_scope(dataset: str, classes: Sequence, seeds: Sequence[int],
                out: Path) -> tuple[list, list[int]]:
    """The classes and seeds of the sweep folder's table: the sweep's own and those of every run
    already in `out` (a sweep that re-makes one class keeps the others in the table), classes
    and seeds in order (a data set's classes are all numbers or all folder names; CIFAR-10's
    names sort alphabetically, as its class order is)."""
    on_disk = runs_on_disk(dataset, out)
    return (sorted({*classes, *(c for c, _ in on_disk)}),
            sorted({*seeds, *(s for _, s in on_disk)}))


def write_csv(rows: list[dict], path: Path) -> None:
    """results.csv: one row per run and method, written atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{row[k]:.4f}" if k in FIGURES and row.get(k) is not None
                             else row.get(k)) for k in CSV_COLUMNS})
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue())


def mean_std(values: Sequence[float]) -> str:
    """A table cell: "0.912 ± 0.004" over seeds (the population std), "0.912" for one, "–" for none."""
    if not values:
        return "–"
    v = np.asarray(values, dtype=float)
    return f"{v.mean():.3f} ± {v.std():.3f}" if len(v) > 1 else f"{v.mean():.3f}"


def seeds_note(n: int, of: int) -> str:
    """What a per-class cell adds when it averages fewer seeds than its column's fullest class (a
    sweep still running): " (2 of 3 seeds)"; nothing when it has as many."""
    return f" ({n} of {of} seeds)" if 0 < n < of else ""


def published_for(dataset: str) -> list[dict]:
    """The published figures for a dataset (PUBLISHED), in table order."""
    return [p for p in PUBLISHED if p["dataset"] == dataset]


def results_markdown(rows: list[dict], dataset: str, classes: Sequence, seeds: Sequence[int],
                     *, title: str = "", flagged: dict[tuple[str, int, str], str] | None = None,
                     dev: bool = False) -> str:
    """results.md: per metric a table of mean ± std over seeds per class and method, the mean over
    classes (± std across the class means), and the published figures for the dataset. `flagged`
    ({(class, seed, method): what differs}) marks figures kept with other parameters (†). `dev`
    adds each method's development AUROC/AUPRC (validation normals vs other classes' training
    images) beside its test figure."""
    flagged = flagged or {}
    methods = list(dict.fromkeys(r["method"] for r in rows))
    source = published_source(dataset, classes)
    published = published_for(source) if source else []
    where = {c: published_class_index(source, c) for c in classes}  # in the per-class figures
    lines = [f"# {title or f'Sweep results: {dataset}'}", "",
             f"Classes {', '.join(map(str, classes))}; seeds {', '.join(map(str, seeds))}. "
             f"Per class: mean ± std over seeds (a cell with fewer seeds says how many); "
             f"**mean**: the mean of the class means ± their std across classes. Protocol here: "
             f"the normal class's training images, the full test set; thresholds from validation "
             f"normals only.", ""]
    if dev:
        lines += ["Columns marked (dev): the development set, the validation normals against a "
                  "seeded, class-stratified sample of the other classes' *training* images (no "
                  "test image); the guidebook's defaults are chosen on it.", ""]
    if not rows:
        return "\n".join(lines + ["No run of the sweep has finished a method yet.", ""])

    def table(metric: str, with_published: bool) -> list[str]:
        pub = published if with_published else []
        columns = [(m, metric, m) for m in methods]
        if dev and metric in ("auroc", "auprc"):
            columns += [(m, f"dev_{metric}", f"{m} (dev)") for m in methods]
        head = ["class", *(name for _, _, name in columns),
                *(f"{p['method']} (published)" for p in pub)]
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        class_means: list[list[float]] = [[] for _ in columns]
        values = {(c, i): [r[key] for r in rows if r["method"] == m and str(r["class"]) == str(c)
                           and r.get(key) is not None]
                  for c in classes for i, (m, key, _) in enumerate(columns)}
        most = [max(len(values[c, i]) for c in classes) for i in range(len(columns))]
        for c in classes:
            cells = []
            for i, ((m, _, _), means) in enumerate(zip(columns, class_means, strict=True)):
                vals = values[c, i]
                mark = any((str(c), s, m) in flagged for s in seeds)
                cells.append(mean_std(vals) + seeds_note(len(vals), most[i])
                             + (" †" if mark else ""))
                if vals:
                    means.append(float(np.mean(vals)))
            for p in pub:
                per, i = p.get("per_class"), where[c]
                cells.append(f"{per[i]:.3f}" if per and i is not None and i < len(per) else "")
            out.append(f"| {c} | " + " | ".join(cells) + " |")
        means = [mean_std(m) for m in class_means]
        # a published per-class table gives the mean over the same classes as ours
        same = [f"{np.mean([p['per_class'][where[c]] for c in classes]):.3f}"
                if p.get("per_class") and all(where[c] is not None and where[c] < len(
                    p["per_class"]) for c in classes) else "" for p in pub]
        out.append("| **mean** | " + " | ".join(means + same) + " |")
        if pub:
            out.append("| mean of all ten classes (published) | " + " | ".join(
                [""] * len(columns) + [f"{p['mean']:.3f}" for p in pub]) + " |")
        return out

    lines += ["## AUROC", ""] + table("auroc", True) + [""]
    if flagged:
        lines += ["† Kept with --keep-different: made with other parameters than this sweep "
                  "asked for:", ""]
        lines += [f"* class {c} seed {s}, {m}: {why}" for (c, s, m), why in sorted(flagged.items())]
        lines += [""]
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
    if any(r.get("pixel_auroc") is not None for r in rows):  # data with ground-truth masks
        lines += ["", "## Pixel AUROC (anomaly maps against the ground-truth masks)", "",
                  "Every test pixel of the images a method scored, ranked by its anomaly map "
                  "(maps.py); methods without maps have none.", ""]
        lines += table("pixel_auroc", False)
    lines += ["", "Training and scoring seconds of every run are in results.csv: they depend on the "
              "machine and its load, so this file leaves them out, and the same runs give the "
              "same results.md on any engine."]
    return "\n".join(lines) + "\n"


def write_results(dataset: str, classes: Sequence, seeds: Sequence[int], out: Path, *,
                  flagged: dict[tuple[str, int, str], str] | None = None,
                  dev: bool = False) -> list[dict]:
    """Write DIR/results.csv and DIR/results.md from the run folders (`table_scope`: the given
    classes and seeds and every other run in DIR); returns the rows."""
    classes, seeds = table_scope(dataset, classes, seeds, out)
    rows = collect(dataset, classes, seeds, out)
    write_csv(rows, out / "results.csv")
    with atomic_path(out / "results.md") as tmp:
        tmp.write_text(results_markdown(rows, dataset, classes, seeds, flagged=flagged, dev=dev))
    return rows
