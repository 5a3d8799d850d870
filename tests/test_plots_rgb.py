"""Colour images (CIFAR-10, RGB folders) are shown in colour, channels in R, G, B order, in
every grid: plots.image_grid, the saved PNG grids, the class browser and the threshold explorer."""

import matplotlib
import numpy as np
import pytest
import torch

import anogan_guide as ag
from anogan_guide import evaluate, plots, widgets
from anogan_guide.runs import open_run, save_image_grid

COLOURS = {"red": (255, 0, 0), "blue": (0, 0, 255)}


@pytest.fixture(scope="module")
def rgb_split(tmp_path_factory):
    """A folder dataset (one folder per class) of plain red and plain blue 32x32 PNGs."""
    from PIL import Image

    root = tmp_path_factory.mktemp("rgb")
    for part, n in (("train", 6), ("test", 3)):
        for name, rgb in COLOURS.items():
            (root / part / name).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (32, 32), rgb).save(root / part / name / f"{i}.png")
    return ag.load_one_class("folder", "red", data_root=root, image_size=32)


def _shown(fig) -> np.ndarray:
    """The RGB array the first image of a figure displays."""
    return np.asarray(fig.axes[0].images[0].get_array())


def _centre(grid: np.ndarray) -> np.ndarray:
    return grid[2 + 16, 2 + 16]  # inside the first image (make_grid's padding is 2)


def test_folder_images_keep_their_channels(rgb_split):
    assert rgb_split.channels == 3 and rgb_split.class_names == ["blue", "red"]
    assert (rgb_split.train.images[:, 0] == 255).all() and (rgb_split.train.images[:, 2] == 0).all()


@pytest.mark.parametrize("value_range", [(0.0, 1.0), (-1.0, 1.0)])
def test_image_grid_shows_colour_in_either_value_range(rgb_split, value_range):
    images = rgb_split.train.in_range(*value_range).tensors()[:4]
    fig = plots.image_grid(images, value_range=value_range)
    grid = _shown(fig)
    assert grid.shape[-1] == 3
    np.testing.assert_allclose(_centre(grid), [1.0, 0.0, 0.0], atol=1e-6)
    matplotlib.pyplot.close(fig)
    gray = plots.image_grid(images[:, :1], value_range=value_range)  # one channel: gray map
    assert gray.axes[0].images[0].get_cmap().name == "gray"
    matplotlib.pyplot.close(gray)


def test_saved_grids_are_rgb_pngs(rgb_split, tmp_path):
    from PIL import Image

    test = rgb_split.test.in_range(-1, 1).tensors()
    save_image_grid(test, tmp_path / "grid.png", value_range=(-1, 1), nrow=6)
    with Image.open(tmp_path / "grid.png") as img:
        assert img.mode == "RGB"
        assert img.getpixel((2 + 16, 2 + 16)) == COLOURS["blue"]  # the test set starts with blue


def test_training_grids_show_the_last_epochs_grid_or_say_none_was_saved(rgb_split, tmp_path):
    test = rgb_split.test.in_range(-1, 1).tensors()
    run = open_run(tmp_path)
    for epoch in (1, 2, 10, 999, 1000):  # GradCon's published 1,000 epochs pass 3 digits
        save_image_grid(test, run.epoch_grid("ganomaly", epoch), value_range=(-1, 1))
    titles = [ax.get_title() for ax in plots.training_grids(run.train_img, "ganomaly").axes]
    assert titles == ["ganomaly_epoch1000"]
    fig = plots.training_grids(run.train_img, "ganomaly", first=True)
    assert [ax.get_title() for ax in fig.axes] == ["ganomaly_epoch001", "ganomaly_epoch1000"]
    shown = fig.axes[0].get_images()[0].get_array()
    assert shown.shape[2] == 3 and tuple(np.round(shown[18, 18] * 255)) == COLOURS["blue"]
    none = plots.training_grids(run.train_img, "gradcon")  # checkpoints copied without their grids
    assert "no gradcon_epoch*.png" in none.axes[0].texts[0].get_text()
    matplotlib.pyplot.close("all")


def test_class_browser_shows_each_class_in_its_colour(rgb_split):
    browser = widgets.class_browser(rgb_split)
    part = browser.children[0]
    for name, rgb in COLOURS.items():
        tag = "normal" if name == "red" else "anomaly"
        part.value = f"test class {name} ({tag})"
        np.testing.assert_allclose(_centre(_shown(browser.result)), np.array(rgb) / 255)
    matplotlib.pyplot.close("all")


def test_threshold_explorer_shows_the_misclassified_images_in_colour(rgb_split, tmp_path,
                                                                     monkeypatch):
    run = ag.open_run(tmp_path)
    evaluate.write_split_sizes(run, rgb_split)
    test_scores = torch.zeros(len(rgb_split.test))  # everything looks normal: anomalies missed
    evaluate.finish_method(run, "flat", rgb_split, {"score": torch.ones(len(rgb_split.val))},
                           {"score": test_scores}, dev={"score": torch.ones(len(rgb_split.dev))},
                           test_indices=torch.arange(len(rgb_split.test)),
                           train_seconds=0.0, score_seconds=0.0, params={})
    shown = []
    monkeypatch.setattr(matplotlib.pyplot, "show", lambda: shown.append(matplotlib.pyplot.gcf()))
    widgets.method_threshold_explorer({"flat": evaluate.load_scores(run, "flat")},
                                      rgb_split.test, max_images=3)
    assert shown and "missed anomalies" in shown[-1].axes[0].get_title()
    np.testing.assert_allclose(_centre(_shown(shown[-1])), np.array(COLOURS["blue"]) / 255)
    matplotlib.pyplot.close("all")
