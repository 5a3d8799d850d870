"""CIFAR-10 (JPEG) in the guidebook, CI-sized: a few images of two classes taken from
../shared/data/cifar10-jpeg.tar.gz (nothing is downloaded) through the `folder` dataset, by
class name: a sweep of GradCon over both classes, and what its notebooks print."""

import csv
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
ARCHIVE = Path(os.environ.get("ANOGAN_GUIDE_CIFAR10_JPEG",
                              REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"))
CLASSES = ("airplane", "automobile")
PER_CLASS = {"train": 40, "test": 20}  # images of each class taken from each part


def extract_subset(archive: Path, target: Path, classes=CLASSES, per_class=PER_CLASS) -> Path:
    """The first `per_class[part]` images of each class of each part (train, test), copied
    from the archive into target/cifar10-jpeg/<part>/<class>/ (the folder dataset's layout B)."""
    wanted = {f"cifar10-jpeg/{part}/{c}/{i:04d}.jpg"
              for part, n in per_class.items() for c in classes for i in range(n)}
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            if member.isfile() and member.name in wanted:
                out = target / member.name
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(tar.extractfile(member).read())
                wanted.discard(member.name)
                if not wanted:
                    break
    if wanted:
        raise FileNotFoundError(f"{archive} lacks {len(wanted)} expected images, e.g. "
                                f"{sorted(wanted)[0]}")
    return target / "cifar10-jpeg"


@pytest.fixture(scope="module")
def cifar_folder(tmp_path_factory) -> Path:
    if not ARCHIVE.is_file():
        pytest.skip(f"CIFAR-10 JPEG archive not found at {ARCHIVE} (see ../shared/data/README.md;"
                    f" or set ANOGAN_GUIDE_CIFAR10_JPEG to its path)")
    return extract_subset(ARCHIVE, tmp_path_factory.mktemp("cifar"))


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "anogan_guide.cli", *args], capture_output=True,
                          text=True, timeout=600, cwd=REPO,
                          env=dict(os.environ, ANOGAN_GUIDE_QUIET="1"))


def _stream_text(path: Path) -> str:
    nb = nbformat.read(path, as_version=4)
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.outputs if o.output_type == "stream")


def test_subset_layout(cifar_folder):
    for part, n in PER_CLASS.items():
        for c in CLASSES:
            assert len(list((cifar_folder / part / c).glob("*.jpg"))) == n


@pytest.fixture(scope="module")
def cifar_sweep(cifar_folder, tmp_path_factory) -> Path:
    """A sweep of GradCon over both classes by name, at 32x32 with one restart allowed: its
    automobile run is also what the notebook checks below read."""
    out = tmp_path_factory.mktemp("cifar-sweep") / "sweep"
    result = _cli("sweep", "--dataset", "folder", "--classes", ",".join(CLASSES), "--seeds", "0",
                  "--methods", "gradcon", "--jobs", "2", "-f", str(REPO / "params" / "ci.yaml"),
                  "-p", "data_root", str(cifar_folder), "-p", "image_size", "32",
                  "-p", "max_restarts", "1", "--out", str(out))
    assert result.returncode == 0, result.stderr
    return out


@pytest.mark.slow
def test_data_prep_and_gradcon_notebooks_on_cifar10_by_class_name(cifar_sweep):
    out = cifar_sweep / "folder" / "classautomobile_seed0"
    text = _stream_text(out / "notebooks" / "00_data_prep.ipynb")
    assert "dataset=folder normal_class=automobile image_size=32 channels=3 seed=0" in text
    assert "train normals: 36  validation normals: 4" in text
    assert "test: 40 (20 normal, 20 anomalous)" in text
    assert "class automobile:    20  normal" in text and "class airplane:    20  anomaly" in text
    assert "image shape: (3, 32, 32)" in text
    assert "GradConAE at 32x32x3: 232,771 parameters" in _stream_text(
        out / "notebooks" / "04_gradcon.ipynb")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["normal_class"] == "automobile" and metrics["n_test"] == 40
    assert 0.0 <= metrics["methods"]["gradcon"]["auroc"] <= 1.0
    # the collapse guard's verdict is recorded (None only where it was not asked: max_restarts 0)
    params = metrics["methods"]["gradcon"]["params"]
    assert params["follows_input"] in (True, False)
    assert params["restarts"] == (0 if params["follows_input"] else 1)
    split = json.loads((out / "split.json").read_text())
    assert split["class_names"] == list(CLASSES) and split["channels"] == 3


@pytest.mark.slow
def test_sweep_over_cifar10_class_names(cifar_sweep):
    rows = list(csv.DictReader(open(cifar_sweep / "results.csv")))
    assert [(r["class"], r["method"]) for r in rows] == [(c, "gradcon") for c in CLASSES]
    md = (cifar_sweep / "results.md").read_text()
    # CIFAR-10's published figures beside ours, matched by class name
    assert "| airplane | " in md and " | 0.640 | 0.617 | 0.757 |  | 0.747 |  |" in md
    assert " | 0.565 | 0.659 | 0.530 |  | 0.957 |  |" in md and "matched by class name" in md


def test_cpu_parameters_file_names_only_declared_parameters(tmp_path):
    from anogan_guide import execution

    notebooks = execution.resolve_notebooks(["00_data_prep", "01_dcgan_training", "02_latent_mapping"])
    common, per_notebook = execution.read_params_file(str(REPO / "params" / "cifar10-anogan-cpu.yaml"))
    plans = execution.plan_parameters(notebooks, common, per_notebook, {"data_root": str(tmp_path)},
                                tmp_path)
    assert [p["image_size"] for p in plans] == [64, 64, 64]
    assert plans[0]["dataset"] == "folder" and plans[0]["normal_class"] == "automobile"
    assert plans[2]["max_test_images"] > 0 and plans[2].get("fast_mappings", True)  # f-AnoGAN runs
