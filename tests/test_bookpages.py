"""The book's Results pages and the README's blocks are made from the CSVs (anogan_guide.bookpages):
a table equals its CSV, a changed CSV changes the page and its figure, a new method becomes a
column, the README is current and at most 150 lines; charts keep their shape for any number of
methods."""

import csv
import io
import json
import re
import shutil
from collections import Counter
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from anogan_guide import bookpages
from anogan_guide.plots import MAX_COLUMNS, loss_curves, term_histograms
from anogan_guide.resultstables import Page, Source

REPO = Path(__file__).resolve().parents[1]


def _table(markdown: str) -> tuple[list[str], dict[str, list[str]]]:
    """The first Markdown table of a page: its header and {first cell: cells}."""
    rows = [line for line in markdown.splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in rows]
    return cells[0], {r[0]: r for r in cells[2:]}


def _csv(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def _expected_cell(rows: list[dict], method: str, c: str) -> str:
    mine = [r for r in rows if r["method"] == method and r["class"] == c]
    if not mine:
        return "–"  # a sweep still running: the method lacks this class
    test = np.array([float(r["auroc"]) for r in mine])
    dev = np.array([float(r["dev_auroc"]) for r in mine])
    spread = f" ± {test.std():.3f}" if len(test) > 1 else ""
    # a class with fewer seeds than the method's fullest class says how many
    most = max(Counter(r["class"] for r in rows if r["method"] == method).values())
    note = f" ({len(mine)} of {most} seeds)" if len(mine) < most else ""
    return f"{test.mean():.3f}{spread} ({dev.mean():.3f}){note}"


@pytest.mark.parametrize("page", bookpages.PAGES, ids=lambda p: p.slug)
def test_every_results_page_table_equals_its_csv(tmp_path, page):
    """Each cell is the CSV's mean ± std over seeds (development in brackets), recomputed here
    from the committed CSV, and the mean row the mean over classes."""
    bookpages.write_pages(tmp_path, REPO, pages=(page,))
    head, body = _table((tmp_path / f"{page.slug}.md").read_text())
    rows = _csv(REPO / page.main.csv)
    methods = list(dict.fromkeys(r["method"] for r in rows))
    classes = list(dict.fromkeys(r["class"] for r in rows))
    assert list(body)[:len(classes)] == classes
    for method in methods:
        plain = method.replace(page.main.strip, "") if page.main.strip else method
        column = head.index(page.main.prefix + bookpages.label(plain))
        for c in classes:
            assert body[c][column] == _expected_cell(rows, method, c), (method, c)
        class_means = [np.mean(v) for c in classes if (v := [
            float(r["auroc"]) for r in rows if r["method"] == method and r["class"] == c])]
        assert body["**mean**"][column].startswith(f"**{np.mean(class_means):.4f}**")
        assert body["**mean**"][column].endswith(
            "" if len(class_means) == len(classes) else f" ({len(class_means)} of "
                                                        f"{len(classes)} classes)")
    figure = tmp_path / f"{page.slug}-auroc.png"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"]({page.slug}-auroc.png)" in (tmp_path / f"{page.slug}.md").read_text()


def _tiny_root(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "results" / "x").mkdir(parents=True)
    shutil.copy(REPO / "results" / "digits" / "results.csv", root / "results" / "x")
    return root


def test_a_changed_csv_changes_the_table_and_the_figure_and_a_new_method_is_a_column(tmp_path):
    root = _tiny_root(tmp_path)
    page = Page("x", "X", "X", Source("results/x/results.csv"))
    out = tmp_path / "book"
    bookpages.write_pages(out, root, pages=(page,))
    page_before, png_before = (out / "x.md").read_text(), (out / "x-auroc.png").read_bytes()
    # unchanged inputs rewrite nothing (Sphinx then rebuilds nothing)
    stamp = (out / "x-auroc.png").stat().st_mtime_ns
    bookpages.write_pages(out, root, pages=(page,))
    assert (out / "x-auroc.png").stat().st_mtime_ns == stamp

    path = root / "results" / "x" / "results.csv"
    rows = _csv(path)
    first = next(r for r in rows if r["method"] == "gradcon" and r["class"] == "1")
    first["auroc"] = "0.5000"  # changed by hand
    rows += [dict(r, method="rotnet", auroc=f"{0.6 + 0.01 * i:.4f}")  # a method added later
             for i, r in enumerate(r for r in rows if r["method"] == "ganomaly")]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    bookpages.write_pages(out, root, pages=(page,))
    page_after = (out / "x.md").read_text()
    assert page_after != page_before and (out / "x-auroc.png").read_bytes() != png_before
    head, body = _table(page_after)
    assert body["1"][head.index("GradCon")].startswith("0.500 (")
    assert "RotNet" in head and body["0"][head.index("RotNet")].startswith("0.600 (")
    summary = bookpages.summary_table(root, (page,))
    assert re.search(r"\| RotNet \| 0\.645 \|", summary), summary
    assert re.search(r"\| GradCon \| 0\.9[0-9]{2} \|", summary)


def test_a_missing_csv_is_named_with_the_fix(tmp_path):
    page = Page("x", "X", "X", Source("results/none/results.csv"))
    with pytest.raises(FileNotFoundError, match="results/none/results.csv.*run the sweep"):
        bookpages.write_pages(tmp_path, tmp_path, pages=(page,))


def test_readme_blocks_are_made_from_the_csvs_and_notebooks():
    readme = REPO / "README.md"
    assert bookpages.readme_is_current(readme), (
        "README.md's notebook list or results summary is stale: run "
        "`.venv/bin/python -m anogan_guide.bookpages readme`")
    text = readme.read_text()
    for nb in sorted((REPO / "notebooks").glob("[0-9][0-9]*_*.ipynb")):
        assert f"- `{nb.stem}`: " in text, nb.name


def test_readme_is_a_front_door_of_at_most_150_lines():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= 150, f"README.md has {len(lines)} lines; move text into docs/"
    text = "\n".join(lines)
    for command in ("make demo", "make test", "make book"):
        assert command in text
    for chapter in ("docs/intro.md", "docs/methods.md", "docs/results/", "docs/performance.md",
                    "docs/sweeps.md", "docs/own-images.md", "docs/defaults.md",
                    "docs/run-folder.md", "docs/api.md", "docs/code.md"):
        assert chapter in text
        path = REPO / chapter
        assert path.exists() or chapter in ("docs/results/", "docs/api.md"), chapter


def test_update_readme_rewrites_only_its_blocks(tmp_path):
    root = tmp_path / "repo"
    for page in bookpages.PAGES:  # the README's summary reads every page's CSV
        (root / page.main.csv).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / page.main.csv, root / page.main.csv)
    (root / "notebooks").mkdir()
    nb = {"cells": [{"cell_type": "markdown", "source": ["# 00 · Data: a split\n", "text"]}]}
    (root / "notebooks" / "00_data.ipynb").write_text(json.dumps(nb))
    readme = root / "README.md"
    begin_nb, end_nb = bookpages._markers("notebooks")
    begin, end = bookpages._markers("results-summary")
    begin_t, end_t = bookpages._markers("targets")
    readme.write_text(f"intro\n{begin_nb}\nold\n{end_nb}\nmiddle\n{begin}\n| stale |\n{end}\n"
                      f"{begin_t}\n{end_t}\nend\n")
    assert not bookpages.readme_is_current(readme, root)
    assert bookpages.update_readme(readme, root)
    text = readme.read_text()
    assert text.startswith("intro\n") and "\nmiddle\n" in text and text.endswith("end\n")
    assert "- `00_data`: Data: a split\n" in text and "| stale |" not in text
    assert "| GANomaly |" in text and bookpages.readme_is_current(readme, root)
    assert not bookpages.update_readme(readme, root)  # current: nothing rewritten
    readme.write_text("no markers\n")
    with pytest.raises(ValueError, match="no notebooks block"):
        bookpages.update_readme(readme, root)


@pytest.mark.parametrize("n", [1, 3, 7, 13])
def test_panels_wrap_into_rows_for_any_number_of_methods(n):
    """07_results drew seven histograms in one row (2,361 x 279 px); now rows of at most four."""
    labels = torch.tensor([0, 1] * 20)
    terms = {f"method{i}": torch.randn(40) + labels for i in range(n)}
    fig = term_histograms(terms, labels)
    rows = -(-n // MAX_COLUMNS)
    width, height = fig.get_size_inches()
    assert len(fig.axes) == n
    assert width <= 3.4 * MAX_COLUMNS + 1e-9 and height == pytest.approx(2.8 * rows)
    assert width / height <= 3.4 * min(n, MAX_COLUMNS) / 2.8 + 1e-9
    plt.close(fig)
    fig = loss_curves({f"loss{i}": [1.0, 0.5, 0.2] for i in range(n)})
    assert len(fig.axes) == n and fig.get_size_inches()[0] <= 3.2 * MAX_COLUMNS + 1e-9
    plt.close(fig)


def test_the_auroc_figure_keeps_its_width_for_any_number_of_methods(tmp_path):
    from anogan_guide.resultstables import columns

    root = _tiny_root(tmp_path)
    classes, cols, _ = columns(root, (Source("results/x/results.csv"),))
    sizes = []
    for k in (1, len(cols), 3 * len(cols)):
        many = [cols[i % len(cols)] for i in range(k)]
        fig = bookpages.auroc_figure("x", classes, many, [])
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        sizes.append(tuple(fig.get_size_inches()))
        plt.close(fig)
    assert {w for w, _ in sizes} == {8.0}
    assert all(h < 6 for _, h in sizes)  # the legend adds a row per four methods


def test_targets_are_judged_from_the_csvs_and_incomplete_methods_are_not(tmp_path):
    """Issue 19's targets come from the committed CSVs: a hand-edited CSV changes the verdict,
    and a method without every class is listed as not judged instead of ranked."""
    from anogan_guide import targets

    root = tmp_path / "repo"
    for csv_path in (targets.CIFAR10, targets.MNIST):
        (root / csv_path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / csv_path, root / csv_path)
    rows = {t: (m, v) for t, m, v in targets.rows(root)}
    assert any(t.startswith("CIFAR-10: the best method") for t in rows)
    path = root / targets.CIFAR10
    lines = path.read_text().splitlines()
    head = lines[0].split(",")
    auroc, method, cls = head.index("auroc"), head.index("method"), head.index("class")
    edited = [lines[0]]
    for line in lines[1:]:
        cells = line.split(",")
        if cells[method] == "gradcon":
            cells[auroc] = "0.99"
        if cells[method] == "hybrid" and cells[cls] == "cat":
            continue  # the hybrid loses a class
        edited.append(",".join(cells))
    path.write_text("\n".join(edited) + "\n")
    rows = {t: (m, v) for t, m, v in targets.rows(root)}
    seeds = ", ".join(sorted({line.split(",")[head.index("seed")] for line in lines[1:]
                              if line.split(",")[method] == "gradcon"}))
    assert rows["CIFAR-10: the best method >= 0.8"] == (f"GradCon 0.990 (10 classes, seeds {seeds})",
                                                         "met")
    assert "CIFAR-10: the hybrid >= the better of GANomaly and GradCon" not in rows
    incomplete, verdict = rows["CIFAR-10: methods not yet in every class"]
    assert "hybrid (9 of 10)" in incomplete.split(", ") and verdict == "not judged"
    assert "| CIFAR-10: the best method >= 0.8 | GradCon 0.990" in targets.targets_table(root)


def test_a_baseline_method_missing_from_the_mnist_table_is_listed_as_not_judged(tmp_path):
    """A method of the MNIST table when issue 19 was filed that the table has in no class now
    (its rows being made again) is listed as not judged, not silently left out of the drop
    target."""
    from anogan_guide import targets

    root = tmp_path / "repo"
    path = root / targets.MNIST
    path.parent.mkdir(parents=True)
    lines = (REPO / targets.MNIST).read_text().splitlines()
    method = lines[0].split(",").index("method")
    kept = [line for line in lines[1:] if line.split(",")[method] not in ("gradcon", "anogan")]
    path.write_text("\n".join([lines[0], *kept]) + "\n")
    rows = {t: (m, v) for t, m, v in targets.rows(root)}
    listed, verdict = rows["MNIST: methods not yet in every class"]
    assert verdict == "not judged"
    assert {"GradCon (0 of 10)", "AnoGAN search (0 of 10)"} <= set(listed.split(", "))
    assert "GANomaly" not in listed
