"""Sphinx configuration of the guidebook's book (`make book`).

Before Sphinx reads anything this file lays out the generated sources (all git-ignored):
- notebooks/: the executed notebooks of $ANOGAN_BOOK_NOTEBOOKS (default runs/demo/notebooks;
  CI passes runs/ci/notebooks), every `[0-9][0-9]*_*.ipynb` there, rendered as they were run
  (myst-nb executes nothing);
- results/: a page and a figure per data set from results/*/results.csv
  (anogan_guide.bookpages), with the hand-written notes of results-notes/;
- api.md: autodoc of every module of anogan_guide;
- _vendor/: require.js, the widgets' HTML manager and MathJax from node_modules/ (npm ci of
  package.json), served from the site itself: the book asks no other host for anything.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import shutil
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
REPO = DOCS.parent
sys.path.insert(0, str(REPO))

from anogan_guide import bookpages  # noqa: E402

NOTEBOOKS = Path(os.environ.get("ANOGAN_BOOK_NOTEBOOKS", REPO / "runs" / "demo" / "notebooks"))
if not NOTEBOOKS.is_absolute():
    NOTEBOOKS = REPO / NOTEBOOKS
NODE = DOCS / "node_modules"
VENDOR = DOCS / "_vendor"


def _copy_if_changed(src: Path, dst: Path) -> None:
    if dst.is_file() and dst.stat().st_size == src.stat().st_size and \
            dst.read_bytes() == src.read_bytes():
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


def _sync(pairs: list[tuple[Path, Path]], folder: Path, also_keep: tuple[Path, ...] = ()) -> None:
    """Copy each (source, target) whose bytes changed and remove what else is in `folder` (but
    `also_keep`)."""
    keep = {dst.resolve() for _, dst in pairs} | {p.resolve() for p in also_keep}
    for src, dst in pairs:
        _copy_if_changed(src, dst)
    if folder.is_dir():
        for path in folder.rglob("*"):
            if path.is_file() and path.resolve() not in keep:
                path.unlink()


def _write_if_changed(path: Path, text: str) -> None:
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)


def lay_out_notebooks() -> None:
    found = sorted(NOTEBOOKS.glob("[0-9][0-9]*_*.ipynb"))
    if not found:
        sys.exit(f"no executed notebooks in {NOTEBOOKS}: run `make demo` first (or `make book`, "
                 f"which runs it), or set ANOGAN_BOOK_NOTEBOOKS to a run's notebooks/ folder")
    unrun = sorted(p for p in (REPO / "notebooks").glob("[0-9][0-9]*_*.ipynb")
                   if not (NOTEBOOKS / p.name).is_file())
    _sync([(nb, DOCS / "notebooks" / nb.name) for nb in found], DOCS / "notebooks",
          tuple(DOCS / "notebooks" / nb.name for nb in unrun))
    for nb in unrun:  # a notebook newer than the run: its code without outputs, and a note
        (DOCS / "notebooks").mkdir(exist_ok=True)
        data = json.loads(nb.read_text())
        data["cells"].insert(1, {"cell_type": "markdown", "id": "not-executed", "metadata": {}, "source": [
            f"```{{note}}\nThis chapter was not executed in the run the book was built from "
            f"(`{NOTEBOOKS.relative_to(REPO) if NOTEBOOKS.is_relative_to(REPO) else NOTEBOOKS}`"
            f"), so it shows no outputs: run `make demo` again, then `make book`.\n```"]})
        _write_if_changed(DOCS / "notebooks" / nb.name, json.dumps(data, indent=1))
    if unrun:
        print(f"the book shows {', '.join(p.name for p in unrun)} without outputs: not executed "
              f"in {NOTEBOOKS} (run `make demo` again)", file=sys.stderr)


def lay_out_vendor() -> None:
    missing = [p for p in ("requirejs", "@jupyter-widgets/html-manager", "mathjax")
               if not (NODE / p / "package.json").is_file()]
    if missing:
        sys.exit(f"{', '.join(missing)} not installed in {NODE}: run `make book` (or "
                 f"`cd docs && npm ci`)")
    pairs = [(NODE / "requirejs" / "require.js", VENDOR / "require.js")]
    manager = NODE / "@jupyter-widgets" / "html-manager" / "dist"
    # embed-amd.js and the font files its CSS asks for (relative to the script; a browser takes
    # the first format it reads of each @font-face, so the .eot and .svg fonts are left out)
    pairs += [(f, VENDOR / "html-manager" / f.name) for f in sorted(manager.iterdir())
              if f.name == "embed-amd.js" or f.suffix in (".woff2", ".woff", ".ttf")]
    es5 = NODE / "mathjax" / "es5"
    # the TeX-to-HTML component and everything it may load later (extensions, fonts, the menu's
    # accessibility parts); not the other combined components
    for f in sorted(es5.rglob("*")):
        rel = f.relative_to(es5)
        if f.is_file() and (len(rel.parts) > 1 or rel.name == "tex-chtml.js"):
            pairs.append((f, VENDOR / "mathjax" / rel))
    _sync(pairs, VENDOR)


def _first_paragraph(text: str) -> str:
    return " ".join(text.strip().split("\n\n")[0].split())


def write_notebook_list() -> None:
    """_notebook_list.md: each executed notebook's title (its first heading), linked."""
    lines = []
    for nb in sorted((DOCS / "notebooks").glob("*.ipynb")):
        cells = json.loads(nb.read_text())["cells"]
        title = next((line.lstrip("# ").strip() for c in cells if c["cell_type"] == "markdown"
                      for line in "".join(c["source"]).splitlines() if line.startswith("# ")),
                     nb.stem)
        lines.append(f"* [{title}](notebooks/{nb.name}) (`notebooks/{nb.name}`)")
    _write_if_changed(DOCS / "_notebook_list.md", "\n".join(lines) + "\n")


def write_module_list() -> None:
    """_module_list.md: every module of the package with its docstring's first paragraph."""
    rows = ["| module | what it does |", "|---|---|"]
    for path in sorted((REPO / "anogan_guide").glob("*.py")):
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        rows.append(f"| `{path.name}` | {_first_paragraph(doc).replace('|', '/')} |")
    _write_if_changed(DOCS / "_module_list.md", "\n".join(rows) + "\n")


def write_api_page() -> None:
    modules = sorted(p.stem for p in (REPO / "anogan_guide").glob("*.py")
                     if not p.stem.startswith("_"))
    lines = ["# API reference", "",
             "Every module of the package `anogan_guide`, with the docstrings of its public "
             "classes and functions (made by Sphinx's autodoc when the book is built). "
             "`import anogan_guide as ag` gives the most used names at the top level "
             "(`ag.load_one_class`, `ag.map_latent`, `ag.gradcon_scores`, the configs, "
             "`ag.open_run`, ...). How the modules fit together: [How the code is organised]"
             "(code.md).", ""]
    for name in modules:
        lines += [f"## `anogan_guide.{name}`", "", "```{eval-rst}",
                  f".. automodule:: anogan_guide.{name}", "   :members:",
                  "   :show-inheritance:", "```", ""]
    _write_if_changed(DOCS / "api.md", "\n".join(lines))


lay_out_notebooks()
lay_out_vendor()
bookpages.write_pages(DOCS / "results", REPO, DOCS / "results-notes")
write_api_page()
write_notebook_list()
write_module_list()

# -- Sphinx --------------------------------------------------------------------------------------
project = "The AnoGAN Guidebook"
author = "the AnoGAN Guidebook's authors"
copyright = "2026, " + author
extensions = ["myst_nb", "sphinx.ext.autodoc", "sphinx.ext.mathjax"]
exclude_patterns = ["_build", "node_modules", "_vendor", "results-notes", "**.ipynb_checkpoints",
                    "_notebook_list.md", "_module_list.md"]
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3
nb_execution_mode = "off"  # the notebooks were executed by `anogan-guide run` (make demo / CI)
nb_merge_streams = True
# the widget scripts from the site itself (myst-nb's default loads them from CDNs); the
# html-manager would fetch widget modules it does not bundle from its data-jupyter-widgets-cdn:
# pointed at the site, such a request stays local (and shows as a missing file)
nb_ipywidgets_js = {
    "require.js": {},
    "html-manager/embed-amd.js": {"data-jupyter-widgets-cdn": "_static/widget-modules/"},
}
mathjax_path = "mathjax/tex-chtml.js"  # relative to _static
html_static_path = ["_vendor", "_static"]
html_css_files = ["book.css"]
# after MathJax (Sphinx gives it priority 500), before the widgets render
html_js_files = [("mathjax2-hub.js", {"defer": "defer", "priority": 510})]
html_favicon = "_static/favicon.svg"
html_theme = "sphinx_book_theme"
html_title = project
html_last_updated_fmt = None
html_theme_options = {
    "show_toc_level": 2,
    "navigation_with_keys": False,
    "use_download_button": False,
    "use_fullscreen_button": False,
    "home_page_in_toc": True,
}
autodoc_member_order = "bysource"
autodoc_default_options = {"undoc-members": False}
# chapters that are in the book when their page exists (index.md globs them)
OPTIONAL_CHAPTERS = ("self-supervision*", "apply*")
html_copy_source = False
html_show_sourcelink = False


def plain_docstrings(app, what, name, obj, options, lines) -> None:
    """The package's docstrings are prose for `help()`, not reStructuredText: those that docutils
    reads cleanly are rendered as such, the others (a `|x|`, an indented list) verbatim, so the
    API page shows every docstring without a markup error."""
    import io
    import re

    from docutils import nodes
    from docutils.core import publish_doctree

    text = "\n".join(lines)
    if not text.strip():
        return
    # `code` spans become a plain word for the check: the roles Sphinx registers need its env
    quiet = {"report_level": 5, "halt_level": 5, "warning_stream": io.StringIO()}
    tree = publish_doctree(re.sub(r"`[^`]*`", "x", text), settings_overrides=quiet)
    if any(m["level"] >= 2 for m in tree.findall(nodes.system_message)) or \
            next(tree.findall(nodes.problematic), None) is not None:
        lines[:] = ["::", ""] + ["    " + line for line in lines] + [""]


class _OptionalChapters(logging.Filter):
    """Sphinx warns when a toctree glob matches nothing and gives that warning no type to
    suppress it by; for the optional chapters that is expected."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return not ("didn't match any documents" in text and
                    any(repr(c) in text for c in OPTIONAL_CHAPTERS))


def setup(app):
    app.connect("autodoc-process-docstring", plain_docstrings)
    for handler in logging.getLogger("sphinx").handlers:  # ahead of -W's warning-is-error
        handler.filters.insert(0, _OptionalChapters())
default_role = "code"  # `name` in a docstring is code, as in the package
