"""The committed sweeps' results as tables: which CSV makes which Results page (PAGES), each
method's per-class test and development AUROC read from results/*/results.csv, the published
figures (results.PUBLISHED) beside them, and the README's summary of every data set. Methods are
whatever a CSV has; anogan_guide.bookpages turns these tables into the book's pages.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .results import mean_std, published_class_index, published_for, published_source, seeds_note

ROOT = Path(__file__).resolve().parents[1]
# AnoGAN and f-AnoGAN with the published score, as the tables had them before the rotation head
# (MNIST seeds 0-2, CIFAR-10 seed 0)
PUBLISHED_SCORE = "results/mnist-anogan-published/results.csv"
PUBLISHED_SCORE_CIFAR10 = "results/cifar10-anogan-published/results.csv"
# how a method is called in tables; a method not listed is shown by its name in the CSV
LABELS = {"ganomaly": "GANomaly", "gradcon": "GradCon", "hybrid": "hybrid", "ensemble": "ensemble",
          "anogan": "AnoGAN search", "fanogan": "f-AnoGAN encoder",
          "fanogan-refine": "f-AnoGAN encoder + refine", "rotnet": "RotNet"}


@dataclass(frozen=True)
class Source:
    """Rows of one results.csv: `seeds` / `methods` keep a subset (None: all); `prefix` goes in
    front of each column's name; `strip` is removed from method names (a variant's suffix) to
    find the method's row in the README's summary."""
    csv: str
    seeds: tuple[int, ...] | None = None
    methods: tuple[str, ...] | None = None
    prefix: str = ""
    strip: str = ""


@dataclass(frozen=True)
class Page:
    """One Results page: its file name, title, the data set whose published figures apply, the
    main results (`main`, also the README summary's column) and others shown beside them."""
    slug: str
    title: str
    column: str  # the README summary's column heading
    main: Source
    beside: tuple[Source, ...] = field(default=())
    about: str = ""
    summary_published: bool = True  # False: the README's summary shows them under another page


PAGES = (
    Page("digits", "Digits (scikit-learn's 8×8, the embedded default)", "digits",
         Source("results/digits/results.csv"),
         about="The embedded default: every class of scikit-learn's real 8×8 digits (test sets "
               "of 540 images, 54 normal), at `params/demo.yaml`'s sizes. There are no published "
               "figures for this data set."),
    Page("mnist", "MNIST", "MNIST",
         Source("results/mnist/results.csv"),
         beside=(Source(PUBLISHED_SCORE, prefix="published score: "),),
         about="The full protocol: the normal class's official training images minus 10% "
               "validation normals, the full 10,000-image test set, `params/mnist-cpu.yaml`'s "
               "CPU sizes. Beside them, AnoGAN and f-AnoGAN with the published score (the "
               "mapping's loss, a DCGAN without the rotation head), as the table had them "
               "before the head (`results/mnist-anogan-published/`)."),
    Page("cifar10", "CIFAR-10 (JPEG)", "CIFAR-10 (JPEG)",
         Source("results/cifar10/results.csv"),
         beside=(Source(PUBLISHED_SCORE_CIFAR10, prefix="published score: "),),
         about="CIFAR-10's official split read from the JPEG archive as a `folder` data set "
               "(`params/cifar10-cpu.yaml`, 32×32); the published figures were measured on the "
               "official files. Beside them, AnoGAN and f-AnoGAN with the published score (a "
               "DCGAN without the rotation head, seed 0), as the table had them before the head "
               "(`results/cifar10-anogan-published/`)."),
    Page("mnist-wgan-gp", "MNIST: AnoGAN with a WGAN-GP", "MNIST, WGAN-GP GAN",
         Source("results/mnist-wgan-gp/results.csv", prefix="WGAN-GP: ", strip="-wgangp"),
         beside=(Source(PUBLISHED_SCORE, seeds=(0,), prefix="DCGAN: "),),
         about="AnoGAN's three mappings on a generator trained as a WGAN-GP "
               "(`params/mnist-wgan-gp-cpu.yaml`, 50 epochs), beside the same mappings and the "
               "same published score on the DCGAN of the MNIST table's seed 0 runs before the "
               "rotation head (`results/mnist-anogan-published/`).",
         summary_published=False),
)


def label(method: str) -> str:
    return LABELS.get(method, method)


def published_label(name: str) -> str:
    """"Deep SVDD" -> "Deep SVDD (published)"; "GeoTrans (self-supervised)" -> "GeoTrans
    (self-supervised; published)"."""
    return f"{name[:-1]}; published)" if name.endswith(")") else f"{name} (published)"


def read_rows(root: Path, source: Source) -> list[dict]:
    """The CSV's rows that `source` keeps, figures as floats (None where empty)."""
    path = root / source.csv
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the sweep that writes it, or drop its page "
                                f"from anogan_guide.bookpages.PAGES")
    rows = []
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            if source.seeds is not None and int(row["seed"]) not in source.seeds:
                continue
            if source.methods is not None and row["method"] not in source.methods:
                continue
            for key in ("auroc", "auprc", "f1", "dev_auroc", "dev_auprc", "train_seconds"):
                row[key] = float(row[key]) if row.get(key) not in (None, "") else None
            rows.append(row)
    return rows


@dataclass
class Column:
    """A method's figures: per class the test and development AUROC of each seed."""
    name: str  # column heading
    method: str  # method name for the summary (variant suffix stripped)
    test: dict[str, list[float]]
    dev: dict[str, list[float]]
    seeds: dict[str, list[int]]
    train_seconds: list[float]


def columns(root: Path, sources: Sequence[Source]) -> tuple[list[str], list[Column], str]:
    """The classes (in the first CSV's order), one Column per (source, method) in CSV order, and
    the CSV's data set name."""
    classes: list[str] = []
    out: list[Column] = []
    dataset = ""
    for source in sources:
        rows = read_rows(root, source)
        dataset = dataset or (rows[0]["dataset"] if rows else "")
        for r in rows:
            if r["class"] not in classes:
                classes.append(r["class"])
        for method in dict.fromkeys(r["method"] for r in rows):
            plain = method.replace(source.strip, "") if source.strip else method
            col = Column(source.prefix + label(plain), plain, {}, {}, {}, [])
            for r in rows:
                if r["method"] != method:
                    continue
                col.test.setdefault(r["class"], []).append(r["auroc"])
                col.seeds.setdefault(r["class"], []).append(int(r["seed"]))
                if r["dev_auroc"] is not None:
                    col.dev.setdefault(r["class"], []).append(r["dev_auroc"])
                if r["train_seconds"] is not None:
                    col.train_seconds.append(r["train_seconds"])
            out.append(col)
    return classes, out, dataset


def class_mean(col: Column, c: str) -> float | None:
    return float(np.mean(col.test[c])) if col.test.get(c) else None


def mean_over_classes(col: Column, classes: Sequence[str], part: str = "test") -> float | None:
    values = getattr(col, part)
    means = [float(np.mean(values[c])) for c in classes if values.get(c)]
    return float(np.mean(means)) if means else None


def coverage(col: Column, classes: Sequence[str]) -> str:
    """" (k of n classes)" when the column lacks some of the table's classes (a sweep still
    running: its mean is over the classes it has), else ""."""
    have = sum(bool(col.test.get(c)) for c in classes)
    return f" ({have} of {len(classes)} classes)" if have < len(classes) else ""


def published(page: Page, dataset: str, classes: Sequence[str]) -> list[dict]:
    """The published figures for the page's classes: name, per-class values (None where the
    paper gives none), the mean over these classes (or the paper's mean) and the protocol."""
    source = published_source(dataset, classes)
    out = []
    for p in published_for(source) if source else []:
        where = [published_class_index(source, c) for c in classes]
        per = p.get("per_class")
        values = [per[i] if per and i is not None and i < len(per) else None for i in where]
        known = [v for v in values if v is not None]
        mean = float(np.mean(known)) if per and len(known) == len(classes) else p["mean"]
        out.append({"name": p["method"], "values": values, "mean": mean, "paper_mean": p["mean"],
                    "protocol": p["protocol"]})
    return out


def _cell(col: Column, c: str) -> str:
    test, dev = col.test.get(c), col.dev.get(c)
    if not test:
        return "–"
    most = max(len(s) for s in col.seeds.values())
    return mean_std(test) + (f" ({np.mean(dev):.3f})" if dev else "") + seeds_note(len(test), most)


def page_table(classes: Sequence[str], cols: Sequence[Column], pub: Sequence[dict]) -> list[str]:
    """The per-class Markdown table: mean ± std over seeds of the test AUROC, the development
    AUROC in brackets, the published per-class figures beside; a mean row, per-seed means,
    train times."""
    pub = [p for p in pub if any(v is not None for v in p["values"])]
    head = ["class", *(c.name for c in cols), *(published_label(p["name"]) for p in pub)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, c in enumerate(classes):
        cells = [_cell(col, c) for col in cols]
        cells += [f"{p['values'][i]:.3f}" if p["values"][i] is not None else "" for p in pub]
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    means = []
    for col in cols:
        test, dev = mean_over_classes(col, classes), mean_over_classes(col, classes, "dev")
        means.append("–" if test is None else f"**{test:.4f}**" + (f" ({dev:.4f})" if dev is not
                                                                    None else "")
                     + coverage(col, classes))
    lines.append("| **mean** | " + " | ".join(means + [f"{p['mean']:.3f}" for p in pub]) + " |")
    seeds = sorted({s for col in cols for v in col.seeds.values() for s in v})
    if len(seeds) > 1:
        per_seed = []
        for col in cols:
            m = [np.mean([v for c in classes for v, s in zip(col.test.get(c, []), col.seeds.get(
                c, []), strict=True) if s == seed] or [np.nan]) for seed in seeds]
            per_seed.append(" / ".join("–" if np.isnan(x) else f"{x:.4f}" for x in m))
        lines.append(f"| mean per seed ({' / '.join(map(str, seeds))}) | "
                     + " | ".join(per_seed + [""] * len(pub)) + " |")
    times = [f"{min(col.train_seconds):.0f}-{max(col.train_seconds):.0f}" if col.train_seconds
             else "" for col in cols]
    lines.append("| train s per run | " + " | ".join(times + [""] * len(pub)) + " |")
    return lines


def summary_table(root: Path = ROOT, pages: Sequence[Page] = PAGES) -> str:
    """Mean test AUROC over classes (and seeds) per method and data set, then the published
    means (each paper's own mean over the ten classes), as a Markdown table."""
    by_page = []
    for page in pages:
        classes, cols, dataset = columns(root, (page.main,))
        by_page.append((page, classes, cols, published(page, dataset, classes)
                        if page.summary_published else []))
    methods = list(dict.fromkeys(col.method for _, _, cols, _ in by_page for col in cols))
    head = ["mean test AUROC", *(p.column for p, *_ in by_page)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in methods:
        cells = []
        for _, classes, cols, _ in by_page:
            col = next((c for c in cols if c.method == m), None)
            mean = mean_over_classes(col, classes) if col else None
            cells.append(f"{mean:.3f}{coverage(col, classes)}" if mean is not None else "")
        lines.append(f"| {label(m)} | " + " | ".join(cells) + " |")
    names = list(dict.fromkeys(p["name"] for *_, pub in by_page for p in pub))
    for name in names:
        cells = []
        for *_, pub in by_page:
            p = next((p for p in pub if p["name"] == name), None)
            mark = "" if not p or p["protocol"].startswith("official train split") else " *"
            cells.append(f"{p['paper_mean']:.3f}{mark}" if p else "")
        lines.append(f"| {published_label(name)} | " + " | ".join(cells) + " |")
    lines += ["", "Mean over the ten classes (and the seeds) of each method's test AUROC; published: "
              "each paper's mean over the ten classes, * on another protocol than this one (the "
              "normal class's training images, the full test set); (k of 10 classes): a sweep "
              "still running, the mean of the classes it has."]
    return "\n".join(lines) + "\n"
