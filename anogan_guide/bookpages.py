"""The book's Results pages and the README's summary table, made from the committed sweeps'
results/*/results.csv and the published figures (results.PUBLISHED), so that a changed CSV
changes the book and the README the next time they are made. Methods are whatever a CSV has.

    python -m anogan_guide.bookpages pages docs/results   # a page + a figure per data set
    python -m anogan_guide.bookpages readme README.md     # the README's marked summary block
    python -m anogan_guide.bookpages readme --check       # exit 1 when README's block is stale
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .results import DATASET_NAMES, published_class_index, published_for, published_source

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- results-summary: made by python -m anogan_guide.bookpages readme -->", \
    "<!-- /results-summary -->"
# how a method is called in tables; a method not listed is shown by its name in the CSV
LABELS = {"ganomaly": "GANomaly", "gradcon": "GradCon", "hybrid": "hybrid", "ensemble": "ensemble",
          "anogan": "AnoGAN search", "fanogan": "f-AnoGAN encoder",
          "fanogan-refine": "f-AnoGAN encoder + refine"}


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
         about="The full protocol: the normal class's official training images minus 10% "
               "validation normals, the full 10,000-image test set, `params/mnist-cpu.yaml`'s "
               "CPU sizes."),
    Page("cifar10", "CIFAR-10 (JPEG)", "CIFAR-10 (JPEG)",
         Source("results/cifar10/results.csv"),
         about="CIFAR-10's official split read from the JPEG archive as a `folder` data set "
               "(`params/cifar10-cpu.yaml`, 32×32); the published figures were measured on the "
               "official files."),
    Page("mnist-wgan-gp", "MNIST: AnoGAN with a WGAN-GP", "MNIST, WGAN-GP GAN",
         Source("results/mnist-wgan-gp/results.csv", prefix="WGAN-GP: ", strip="-wgangp"),
         beside=(Source("results/mnist/results.csv", seeds=(0,),
                        methods=("anogan", "fanogan", "fanogan-refine"), prefix="DCGAN: "),),
         about="AnoGAN's three mappings on a generator trained as a WGAN-GP "
               "(`params/mnist-wgan-gp-cpu.yaml`, 50 epochs), beside the same mappings on the "
               "DCGAN of the MNIST page's seed 0 runs.",
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
    text = f"{np.mean(test):.3f}" + (f" ± {np.std(test):.3f}" if len(test) > 1 else "")
    return text + (f" ({np.mean(dev):.3f})" if dev else "")


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
                                                                    None else ""))
    lines.append("| **mean** | " + " | ".join(means + [f"{p['mean']:.3f}" for p in pub]) + " |")
    seeds = sorted({s for col in cols for v in col.seeds.values() for s in v})
    if len(seeds) > 1:
        per_seed = []
        for col in cols:
            m = [np.mean([v for c in classes for v, s in zip(col.test.get(c, []), col.seeds.get(
                c, []), strict=True) if s == seed] or [np.nan]) for seed in seeds]
            per_seed.append(" / ".join(f"{x:.4f}" for x in m))
        lines.append(f"| mean per seed ({' / '.join(map(str, seeds))}) | "
                     + " | ".join(per_seed + [""] * len(pub)) + " |")
    times = [f"{min(col.train_seconds):.0f}-{max(col.train_seconds):.0f}" if col.train_seconds
             else "" for col in cols]
    lines.append("| train s per run | " + " | ".join(times + [""] * len(pub)) + " |")
    return lines


def auroc_figure(title: str, classes: Sequence[str], cols: Sequence[Column],
                 pub: Sequence[dict]):
    """Per-class test AUROC of every method (filled markers, solid lines) beside the published
    figures (open markers, dashed); the legend goes below in rows of at most four, so the
    figure keeps its width for any number of methods."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    series = [(col.name, [class_mean(col, c) for c in classes], False) for col in cols]
    series += [(published_label(p["name"]), p["values"], True) for p in pub
               if any(v is not None for v in p["values"])]
    colours = plt.get_cmap("tab10" if len(series) <= 10 else "tab20")
    markers = "osD^v<>phX*"
    legend_rows = -(-len(series) // 4)
    fig, ax = plt.subplots(figsize=(8.0, 3.6 + 0.28 * legend_rows))
    x = np.arange(len(classes))
    for k, (name, values, is_published) in enumerate(series):
        y = np.array([np.nan if v is None else v for v in values], dtype=float)
        ax.plot(x, y, ls="--" if is_published else "-", lw=1.0, marker=markers[k % len(markers)],
                ms=5, color=colours(k % colours.N), mfc="none" if is_published else None,
                label=name)
    ax.set_xticks(x, [str(c) for c in classes], rotation=30 if max(map(len, classes)) > 3 else 0)
    ax.set_xlabel("normal class")
    ax.set_ylabel("test AUROC")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=min(4, len(series)),
              fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def _write_if_changed(path: Path, data: bytes) -> bool:
    """Write atomically, and only when the bytes differ (Sphinx then rebuilds only what changed)."""
    from .runs import atomic_path

    if path.is_file() and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return True


def page_markdown(page: Page, classes: Sequence[str], cols: Sequence[Column], dataset: str,
                  figure_name: str, notes: str | None) -> str:
    """A Results page: what it shows, the table, the figure, the published figures' protocols
    and the hand-written notes."""
    pub = published(page, dataset, classes)
    seeds = sorted({s for col in cols for v in col.seeds.values() for s in v})
    lines = [f"# {page.title}", "", page.about, "",
             f"Made from `{page.main.csv}`" + "".join(f" and `{s.csv}`" for s in page.beside)
             + " by `anogan_guide.bookpages` when the book is built. Test AUROC per normal class "
             f"({len(classes)} classes; seeds {', '.join(map(str, seeds))}): "
             + ("the mean ± standard deviation over seeds, " if len(seeds) > 1 else "")
             + "the development AUROC (validation normals against other classes' training "
             "images) in brackets; **mean**: the mean over classes.", ""]
    lines += page_table(classes, cols, pub) + [""]
    lines += [f"![Per-class test AUROC of every method beside the published figures]"
              f"({figure_name})", ""]
    if pub:
        name = DATASET_NAMES.get(published_source(dataset, classes) or "", dataset)
        lines += [f"Published figures for {name} (from `results.py:PUBLISHED`; the mean row gives "
                  "their mean over these classes where the paper has per-class figures, else "
                  "the paper's mean), with their protocols:", ""]
        lines += [f"* {p['name']}: {p['protocol']} (mean over the ten classes {p['paper_mean']:.3f})."
                  for p in pub] + [""]
    if notes:
        lines += ["## Notes from the runs", "", notes.strip(), ""]
    return "\n".join(lines)


def write_pages(out: Path, root: Path = ROOT, notes_dir: Path | None = None,
                pages: Sequence[Page] = PAGES) -> list[Path]:
    """Write OUT/<slug>.md and OUT/<slug>-auroc.png for every page (only files whose content
    changed are rewritten); returns the pages' paths. `notes_dir/<slug>.md`, where present, is
    the hand-written part added under the table (commands, what the runs showed)."""
    import io

    import matplotlib.pyplot as plt

    written = []
    for page in pages:
        classes, cols, dataset = columns(root, (page.main, *page.beside))
        fig = auroc_figure(page.title, classes, cols, published(page, dataset, classes))
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
        plt.close(fig)
        _write_if_changed(out / f"{page.slug}-auroc.png", buf.getvalue())
        note = notes_dir / f"{page.slug}.md" if notes_dir else None
        text = page_markdown(page, classes, cols, dataset, f"{page.slug}-auroc.png",
                             note.read_text() if note and note.is_file() else None)
        _write_if_changed(out / f"{page.slug}.md", text.encode())
        written.append(out / f"{page.slug}.md")
    return written


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
            cells.append(f"{mean:.3f}" if mean is not None else "")
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
              "normal class's training images, the full test set)."]
    return "\n".join(lines) + "\n"


def readme_block(root: Path = ROOT) -> str:
    return f"{BEGIN}\n{summary_table(root)}{END}"


def update_readme(path: Path, root: Path = ROOT) -> bool:
    """Replace the README's marked summary block with a fresh one; True when it changed."""
    text = path.read_text()
    start, stop = text.find(BEGIN), text.find(END)
    if start < 0 or stop < start:
        raise ValueError(f"{path} has no summary block: put the lines {BEGIN!r} and {END!r} "
                         f"where the table goes")
    new = text[:start] + readme_block(root) + text[stop + len(END):]
    return _write_if_changed(path, new.encode())


def readme_is_current(path: Path, root: Path = ROOT) -> bool:
    text = path.read_text()
    return readme_block(root) in text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m anogan_guide.bookpages", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("pages", help="write a Results page and figure per data set")
    p.add_argument("out", type=Path)
    p.add_argument("--notes", type=Path, default=None, help="folder of hand-written notes")
    p.add_argument("--root", type=Path, default=ROOT, help="the repository (results/ in it)")
    r = sub.add_parser("readme", help="regenerate the README's summary table")
    r.add_argument("readme", type=Path, nargs="?", default=ROOT / "README.md")
    r.add_argument("--root", type=Path, default=ROOT)
    r.add_argument("--check", action="store_true", help="only say whether it is current")
    args = parser.parse_args(argv)
    if args.what == "pages":
        for path in write_pages(args.out, args.root, args.notes):
            print(path)
        return 0
    if args.check:
        if readme_is_current(args.readme, args.root):
            return 0
        print(f"{args.readme}: the results summary is stale: run python -m anogan_guide.bookpages "
              f"readme", file=sys.stderr)
        return 1
    print(f"{args.readme}: {'updated' if update_readme(args.readme, args.root) else 'current'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
