"""The MVTec AD layout as a `folder` dataset (normal_class good) and the pixel-level AUROC of the
anomaly maps against its ground-truth masks, on a small MVTec-style set generated here (striped
textures; defects pasted as blobs and scratches, with their masks), since the real MVTec AD
cannot be downloaded."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import anogan_guide as ag
from anogan_guide import ensemble, evaluate, ganomaly, gradcon, maps, results

SIZE = 40  # the files' size; the split resizes them to 32 (masks too)


def texture(rng: np.random.Generator) -> np.ndarray:
    """A striped, slightly noisy RGB texture (one orientation and period for the whole set)."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi)
    stripes = 128 + 50 * np.sin(2 * np.pi * (xx * 0.8 + yy * 0.6) / 8 + phase)
    rgb = np.stack([stripes, 0.8 * stripes + 20, 0.6 * stripes + 40], 2)
    return np.clip(rgb + rng.normal(0, 6, rgb.shape), 0, 255).astype(np.uint8)


def defect(rng: np.random.Generator, image: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """The image with a pasted defect, and its mask (255 = defective)."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    cy, cx = rng.uniform(10, SIZE - 10, 2)
    if kind == "blob":
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= rng.uniform(5, 8) ** 2
    else:  # a scratch: a thick line segment
        angle = rng.uniform(0, np.pi)
        along = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)
        across = -(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)
        mask = (np.abs(across) <= 2.0) & (np.abs(along) <= 12)
    out = image.copy()
    out[mask] = (20, 200, 60) if kind == "blob" else (250, 250, 250)
    return out, (mask * 255).astype(np.uint8)


def make_mvtec(root, *, n_train=60, n_good=12, n_defect=10, seed=0):
    """DIR/train/good, DIR/test/good, DIR/test/{blob,scratch}, DIR/ground_truth/<defect>/<name>_mask.png."""
    rng = np.random.default_rng(seed)
    for folder, n in (("train/good", n_train), ("test/good", n_good)):
        (root / folder).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(texture(rng)).save(root / folder / f"{i:03d}.png")
    for kind in ("blob", "scratch"):
        (root / "test" / kind).mkdir(parents=True)
        (root / "ground_truth" / kind).mkdir(parents=True)
        for i in range(n_defect):
            image, mask = defect(rng, texture(rng), kind)
            Image.fromarray(image).save(root / "test" / kind / f"{i:03d}.png")
            Image.fromarray(mask).save(root / "ground_truth" / kind / f"{i:03d}_mask.png")
    return root


@pytest.fixture(scope="module")
def mvtec(tmp_path_factory):
    return make_mvtec(tmp_path_factory.mktemp("mvtec") / "textures")


def test_the_mvtec_layout_is_a_folder_dataset_with_normal_class_good(mvtec):
    split = ag.load_one_class("folder", "good", data_root=mvtec, image_size=32)
    assert split.class_names == ["blob", "good", "scratch"] and split.channels == 3
    assert len(split.train) + len(split.val) == 60 and not split.has_dev
    assert int(split.test_labels.sum()) == 20 and len(split.test) == 32
    assert maps.has_masks(split)
    masks = maps.read_masks(split, torch.arange(len(split.test)), 32)
    defective = split.test_labels.bool()
    assert not masks[~defective].any()  # test/good: no defective pixel
    assert masks[defective].flatten(1).any(1).all()  # every defect image: some
    assert 0.01 < masks[defective].float().mean() < 0.2


def test_pixel_auroc_is_sklearns_over_all_pixels():
    masks = torch.zeros(3, 4, 4, dtype=torch.bool)
    masks[1, :2, :2] = True
    perfect = masks.float() + 0.1 * torch.rand(3, 4, 4)
    assert maps.pixel_auroc(perfect, masks) == 1.0
    assert maps.pixel_auroc(-perfect, masks) == 0.0
    assert maps.pixel_auroc(list(perfect), masks) == 1.0
    with pytest.raises(ValueError, match="only one kind"):
        maps.pixel_auroc(perfect, torch.zeros_like(masks))


def test_each_methods_pixel_auroc_lands_in_metrics_json_and_the_sweeps_results(mvtec, tmp_path,
                                                                              capsys):
    run = ag.open_run(tmp_path / "run")
    ag.seed_everything(0)
    split = ag.load_split(run, dataset="folder", normal_class="good", data_root=str(mvtec),
                          image_size=32)
    every = torch.arange(len(split.test))

    def finish(name, module, trained, **kw):
        evaluate.finish_method(run, name, split, *(module.score(trained, s, **kw)
                                                   for s in (split.val, split.test)),
                               dev=None, test_indices=every, train_seconds=0.0,
                               score_seconds=1.0, params={})

    ganomaly.train(split, ag.GanomalyConfig(epochs=2, batch_size=16, width=8, latent_dim=16), run)
    finish("ganomaly", ganomaly, ganomaly.load(run))
    gradcon.train(split, ag.GradConConfig(epochs=4, batch_size=16, max_restarts=0), run)
    finish("gradcon", gradcon, gradcon.load(run))
    ensemble.finish(run, split, 0.5)
    # the one line each notebook runs after its finish_method
    found = maps.record_pixel_auroc(run, split, ["ganomaly", "gradcon", "ensemble", "hybrid"])
    assert set(found) == {"ganomaly", "gradcon", "ensemble"}  # the run has no hybrid
    out = capsys.readouterr().out
    assert "gradcon: pixel AUROC" in out and "gradient term" in out
    entries = json.loads(run.metrics_path.read_text())["methods"]
    for method, value in found.items():
        assert entries[method]["pixel_auroc"] == value and 0.0 <= value <= 1.0
    # the maps line up with the masks (a map transposed, or of another image, gives about 0.5)
    assert found["gradcon"] > 0.65
    # results.csv / results.md of a sweep over such runs
    rows = [{"dataset": "folder", "class": "good", "seed": 0, "method": m, "auroc": e["auroc"],
             "auprc": e["auprc"], "f1": e["f1"], "dev_auroc": None, "dev_auprc": None,
             "train_seconds": 0.0, "score_seconds": 1.0, "pixel_auroc": e.get("pixel_auroc")}
            for m, e in entries.items()]
    md = results.results_markdown(rows, "folder", ["good"], [0])
    assert "## Pixel AUROC" in md and f"{found['gradcon']:.3f}" in md
    results.write_csv(rows, tmp_path / "results.csv")
    assert (tmp_path / "results.csv").read_text().splitlines()[0].endswith(",pixel_auroc")


def test_no_masks_no_pixel_auroc(tmp_path):
    run = ag.open_run(tmp_path / "run")
    split = ag.load_split(run, dataset="digits", normal_class=0, image_size=16)
    assert not maps.has_masks(split)
    assert maps.record_pixel_auroc(run, split, ["ganomaly"]) == {}
