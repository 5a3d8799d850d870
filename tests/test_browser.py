"""A real browser: JupyterLab on localhost, 07_results in headless Chromium, the threshold slider
dragged with the mouse, and the confusion matrix shown must change.

Needs Debian's `chromium` (apt-get install -y chromium) and the Python `playwright` package (no
browser download: Playwright drives /usr/bin/chromium). Skipped, with the reason, without them.
"""

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _prepared_notebook(folder: Path) -> Path:
    """07_results with run_dir (and the CI image size) injected, as papermill would."""
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    nb = load_notebook_node(str(REPO / "notebooks" / "07_results.ipynb"))
    nb = parameterize_notebook(nb, {"run_dir": str(folder / "run"), "image_size": 16})
    path = folder / "07_results.ipynb"
    nbformat.write(nb, path)
    return path


def _start_lab(root: Path, port: int, token: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
           f"--LabApp.workspaces_dir={root / '.workspaces'}", "--ServerApp.open_browser=False"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    env = dict(os.environ, ANOGAN_GUIDE_QUIET="1", JUPYTER_RUNTIME_DIR=str(root / ".runtime"))
    log = open(root / "jupyterlab.log", "w")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)


def _wait_for_server(proc: subprocess.Popen, port: int, token: str, log: Path) -> None:
    deadline = time.time() + 90
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"JupyterLab exited: {log.read_text()[-2000:]}")
        try:
            url = f"http://127.0.0.1:{port}/api/status?token={token}"
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"JupyterLab did not answer in 90 s: {log.read_text()[-2000:]}")


def _accept_dialog(page) -> None:
    """Accept JupyterLab's "Select Kernel" dialog (it offers the notebook's own kernel), which
    it shows on some starts and not on others."""
    accept = page.locator(".jp-Dialog .jp-mod-accept")
    if accept.count() and accept.first.is_visible():
        accept.first.click()


def _execution_started(page) -> bool:
    """A cell's prompt shows [*] (queued or running) or [n] (done)."""
    prompts = page.locator(".jp-InputArea-prompt").all_inner_texts()
    return any(re.search(r"\[(\*|\d+)\]", text) for text in prompts)


def _run_all_cells(page, attempts: int = 4) -> None:
    """Run > Run All Cells, again until a cell's prompt says it ran or is queued.

    The execution indicator reads "idle" once before the kernel's connection is made, then
    "connecting", then "idle" again; a Run All in that gap is dropped without a word (every
    prompt stays [ ]), which is what a loaded machine showed."""
    for _ in range(attempts):
        page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']",
                               timeout=90_000)
        page.wait_for_timeout(2000)  # the kernel dialog, when it comes, comes now
        _accept_dialog(page)
        page.locator(".lm-MenuBar-itemLabel", has_text=re.compile("^Run$")).click()
        page.locator(".lm-Menu-itemLabel", has_text=re.compile("^Run All Cells$")).click()
        deadline = time.time() + 20
        while time.time() < deadline:
            if _execution_started(page):
                return
            page.wait_for_timeout(500)
    raise AssertionError(f"Run All Cells did not start any cell in {attempts} attempts")


def test_threshold_slider_changes_the_confusion_matrix(tmp_path):
    if not Path(CHROMIUM).is_file():
        pytest.skip("Chromium not installed (apt-get install -y chromium); browser test skipped")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the Python package playwright is not installed; browser test skipped")
    from test_results import make_run_folder

    make_run_folder(tmp_path / "run")
    notebook = _prepared_notebook(tmp_path)
    port, token = _free_port(), secrets.token_hex(16)
    lab = _start_lab(tmp_path, port, token)
    try:
        _wait_for_server(lab, port, token, tmp_path / "jupyterlab.log")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                        args=CHROMIUM_FLAGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(f"http://127.0.0.1:{port}/lab/tree/{notebook.name}?token={token}")
                page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=90_000)
                _run_all_cells(page)  # waits for the kernel's "idle" itself
                explorer = page.locator(".ag-threshold-explorer")
                deadline = time.time() + 300
                # attached, not visible: JupyterLab may hide cells scrolled out of view
                while explorer.count() == 0 and time.time() < deadline:
                    _accept_dialog(page)
                    page.wait_for_timeout(500)
                explorer.wait_for(state="attached", timeout=1000)
                explorer.scroll_into_view_if_needed()
                confusion = explorer.locator(".ag-confusion")
                confusion.wait_for(timeout=30_000)
                before = confusion.inner_text()
                assert re.search(r"TN \d+", before), before
                handle = explorer.locator(".ag-threshold .noUi-handle")
                handle.scroll_into_view_if_needed()
                box = handle.bounding_box()
                x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
                page.mouse.move(x, y)
                page.mouse.down()
                page.mouse.move(x - 120, y, steps=12)
                page.mouse.up()
                deadline = time.time() + 60
                after = before
                while after == before and time.time() < deadline:
                    page.wait_for_timeout(250)
                    after = confusion.inner_text()
                page.screenshot(path=str(tmp_path / "after_drag.png"))
            except Exception:
                page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
                raise
            finally:
                browser.close()
    finally:
        os.killpg(lab.pid, signal.SIGTERM)  # the server we started, and its kernels
        try:
            lab.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(lab.pid, signal.SIGKILL)
    assert after != before, f"the confusion matrix did not change: {before!r}"
    counts = [tuple(int(n) for n in re.findall(r"(?:TN|FP|FN|TP) (\d+)", t))
              for t in (before, after)]
    assert sum(counts[0]) == sum(counts[1]) > 0 and counts[0] != counts[1]
    # dragged left = a lower threshold: more images called anomalous
    assert counts[1][1] + counts[1][3] >= counts[0][1] + counts[0][3]
