"""The book's Results pages and the README's summary table, made from the committed sweeps'
results/*/results.csv and the published figures (results.PUBLISHED), so that a changed CSV
changes the book and the README the next time they are made. Methods are whatever a CSV has.

    python -m anogan_guide.bookpages pages docs/results   # a page + a figure per data set
    python -m anogan_guide.bookpages readme README.md     # the README's marked blocks
    python -m anogan_guide.bookpages readme --check       # exit 1 when README's block is stale
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .results import DATASET_NAMES, published_source
from .resultstables import (
    PAGES,
    ROOT,
    Column,
    Page,
    Source,
    class_mean,
    columns,
    label,
    page_table,
    published,
    published_label,
    summary_table,
)
from .targets import targets_table

__all__ = ["PAGES", "Page", "Source", "auroc_figure", "label", "notebook_list", "readme_text",
           "summary_table", "update_readme", "write_pages"]


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
             + ("the mean ± standard deviation over seeds (a class with fewer seeds than "
                "its column's others says how many), " if len(seeds) > 1 else "")
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
        lines += ["## How the runs were made, and what they show", "", notes.strip(), ""]
    return "\n".join(lines)


def write_pages(out: Path, root: Path = ROOT, notes_dir: Path | None = None,
                pages: Sequence[Page] = PAGES) -> list[Path]:
    """Write OUT/<slug>.md and OUT/<slug>-auroc.png for every page and OUT/index.md (only files
    whose content changed are rewritten; other .md / .png files there are removed); returns the
    pages' paths, index first. `notes_dir/<slug>.md`, where present, is the hand-written part
    added under the table (commands, what the runs showed); `notes_dir/index.md` the Results
    chapter's introduction."""
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
    note = notes_dir / "index.md" if notes_dir else None
    index = index_markdown(root, pages, note.read_text() if note and note.is_file() else None)
    _write_if_changed(out / "index.md", index.encode())
    keep = {out / "index.md", *written, *(out / f"{p.slug}-auroc.png" for p in pages)}
    for old in out.iterdir():  # a page dropped from PAGES leaves nothing behind
        if old.suffix in (".md", ".png") and old not in keep:
            old.unlink()
    return [out / "index.md", *written]


def index_markdown(root: Path, pages: Sequence[Page], notes: str | None) -> str:
    """The Results chapter: the hand-written introduction, the summary table (the README's) and
    the data sets' pages in PAGES order."""
    lines = ["# Results", ""]
    if notes:
        lines += [notes.strip(), ""]
    lines += ["## Mean test AUROC", "", summary_table(root, pages), "",
              "## Issue 19's targets", "", targets_table(root), "", "## Per data set", "",
              "```{toctree}", ":maxdepth: 1", "", *(p.slug for p in pages), "```", ""]
    return "\n".join(lines)


def notebook_list(root: Path = ROOT) -> str:
    """One line per notebook of notebooks/ (`[0-9][0-9]*_*.ipynb`, in order): its name and the
    title of its first heading, without the number."""
    lines = []
    for path in sorted((root / "notebooks").glob("[0-9][0-9]*_*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        title = next((line[2:].strip() for c in cells if c["cell_type"] == "markdown"
                      for line in "".join(c["source"]).splitlines() if line.startswith("# ")),
                     "")
        title = re.sub(r"^\S+\s+·\s+", "", title)  # "03 · GANomaly: ..." -> "GANomaly: ..."
        lines.append(f"- `{path.stem}`: {title}")
    return "\n".join(lines) + "\n"


# README blocks this module writes: name -> what goes between its two marker lines
BLOCKS = {"notebooks": notebook_list, "results-summary": summary_table, "targets": targets_table}


def _markers(name: str) -> tuple[str, str]:
    return (f"<!-- {name}: made by python -m anogan_guide.bookpages readme -->",
            f"<!-- /{name} -->")


def readme_text(text: str, root: Path = ROOT) -> str:
    """`text` (a README) with every block of BLOCKS made afresh."""
    for name, make in BLOCKS.items():
        begin, end = _markers(name)
        start, stop = text.find(begin), text.find(end)
        if start < 0 or stop < start:
            raise ValueError(f"the README has no {name} block: put the lines {begin!r} and "
                             f"{end!r} where it goes")
        text = text[:start] + f"{begin}\n{make(root)}{end}" + text[stop + len(end):]
    return text


def update_readme(path: Path, root: Path = ROOT) -> bool:
    """Make the README's blocks afresh; True when that changed it."""
    return _write_if_changed(path, readme_text(path.read_text(), root).encode())


def readme_is_current(path: Path, root: Path = ROOT) -> bool:
    text = path.read_text()
    return readme_text(text, root) == text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m anogan_guide.bookpages", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("pages", help="write a Results page and figure per data set")
    p.add_argument("out", type=Path)
    p.add_argument("--notes", type=Path, default=None, help="folder of hand-written notes")
    p.add_argument("--root", type=Path, default=ROOT, help="the repository (results/ in it)")
    r = sub.add_parser("readme", help="make the README's notebook list and summary table afresh")
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
        print(f"{args.readme}: its notebook list or results summary is stale: run python -m "
              f"anogan_guide.bookpages readme", file=sys.stderr)
        return 1
    print(f"{args.readme}: {'updated' if update_readme(args.readme, args.root) else 'current'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
