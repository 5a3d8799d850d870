"""results.md beside CIFAR-10's published figures: by class index for `cifar10`, by class name
for folder data named like CIFAR-10 (../shared/data/cifar10-jpeg.tar.gz)."""

import numpy as np
import pytest

from anogan_guide import results, sweep

DEEP_SVDD = (0.617, 0.659, 0.508, 0.591, 0.609, 0.657, 0.677, 0.673, 0.759, 0.731)
OCGAN = (0.757, 0.530, 0.640, 0.620, 0.723, 0.620, 0.723, 0.575, 0.820, 0.554)
ANOGAN = (0.640, 0.565, 0.648, 0.528, 0.670, 0.592, 0.625, 0.576, 0.723, 0.582)


def _rows(dataset, classes, auroc=0.6):
    return [{"dataset": dataset, "class": c, "seed": 0, "method": "gradcon", "auroc": auroc,
             "auprc": 0.2, "f1": 0.3, "dev_auroc": 0.7, "dev_auprc": 0.4, "train_seconds": 1.0,
             "score_seconds": 1.0}
            for c in classes]


def test_cifar10_per_class_figures_are_the_issues():
    table = {p["method"]: p for p in results.published_for("cifar10")}
    assert table["Deep SVDD"]["per_class"] == DEEP_SVDD
    assert table["OCGAN"]["per_class"] == OCGAN
    assert table["AnoGAN (re-run by later papers)"]["per_class"] == ANOGAN
    for p in table.values():  # every listed mean agrees with its per-class figures
        if "per_class" in p:
            assert len(p["per_class"]) == 10
            assert np.mean(p["per_class"]) == pytest.approx(p["mean"], abs=0.0015)
    assert len(results.CIFAR10_CLASSES) == 10 and results.CIFAR10_CLASSES[1] == "automobile"


@pytest.mark.parametrize("dataset, classes", [("cifar10", [0, 1]),
                                              ("folder", ["airplane", "automobile"])])
def test_cifar10_figures_beside_ours_by_index_or_by_name(dataset, classes):
    md = results.results_markdown(_rows(dataset, classes), dataset, classes, [0])
    head = ("| class | gradcon | AnoGAN (re-run by later papers) (published) | Deep SVDD "
            "(published) | OCGAN (published) | GradCon (published) | GeoTrans (self-supervised) "
            "(published) | RotNet + translations (self-supervised) (published) |")
    assert head in md
    assert f"| {classes[0]} | 0.600 | 0.640 | 0.617 | 0.757 |  | 0.747 |  |" in md
    assert f"| {classes[1]} | 0.600 | 0.565 | 0.659 | 0.530 |  | 0.957 |  |" in md
    # the mean over the same classes, then the published ten-class means
    assert "| **mean** | 0.600 ± 0.000 | 0.603 | 0.638 | 0.643 |  | 0.852 |  |" in md
    assert ("| mean of all ten classes (published) |  | 0.615 | 0.648 | 0.657 | 0.664 | 0.860 | "
            "0.900 |" in md)
    assert "GradCon: GradCon's 50/50 test, images resized to 28x28" in md
    named = "matched by class name" in md
    assert named == (dataset == "folder")


def test_all_ten_cifar_classes_by_name_in_class_order():
    classes = list(reversed(results.CIFAR10_CLASSES))  # any order: looked up by name
    md = results.results_markdown(_rows("folder", classes), "folder", classes, [0])
    for i, name in enumerate(results.CIFAR10_CLASSES):
        assert f"| {name} | 0.600 | {ANOGAN[i]:.3f} | {DEEP_SVDD[i]:.3f} | {OCGAN[i]:.3f} |" in md
    assert "| **mean** | 0.600 ± 0.000 | 0.615 | 0.648 | 0.656 |  | 0.860 |  |" in md


def test_folder_data_with_other_names_gets_no_published_figures():
    for classes in (["good"], ["automobile", "scratch"], [0, 1]):
        md = results.results_markdown(_rows("folder", classes), "folder", classes, [0])
        assert "(published)" not in md and "No published figures for folder" in md
    assert results.published_source("folder", ["cat", "dog"]) == "cifar10"
    assert results.published_source("mnist", [0]) == "mnist"
    assert results.published_source("digits", [0]) is None


def test_mnist_published_figures_stay_by_index():
    md = results.results_markdown(_rows("mnist", [2]), "mnist", [2], [0])
    assert "| 2 | 0.600 |  | 0.917 | 0.942 |  |" in md
    assert "matched by class name" not in md


def test_results_files_of_a_folder_sweep_named_like_cifar10(tmp_path):
    from anogan_guide.runs import write_json

    classes = ["airplane", "automobile"]
    for c, auroc in zip(classes, (0.62, 0.48), strict=True):
        folder = sweep.plan_runs("folder", [c], [0], tmp_path)[0].folder
        folder.mkdir(parents=True)
        write_json(folder / "metrics.json", {
            "dataset": "folder", "normal_class": c, "seed": 0, "methods": {
                "anogan": {"auroc": auroc, "auprc": 0.3, "f1": 0.2, "train_seconds": 5.0,
                           "score_seconds": 2.0}}})
    rows = results.write_results("folder", classes, [0], tmp_path)
    assert [r["class"] for r in rows] == classes
    md = (tmp_path / "results.md").read_text()
    assert "| airplane | 0.620 | 0.640 | 0.617 | 0.757 |" in md
    assert "| automobile | 0.480 | 0.565 | 0.659 | 0.530 |" in md
