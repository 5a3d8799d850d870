"""Anomaly maps: overlays (the image beside the image under its map) and, where the data has
ground-truth masks (the MVTec AD layout), the pixel-level AUROC of a method's maps.

MVTec AD layout, read as a `folder` dataset with normal_class good:

    DIR/train/good/*.png   DIR/test/good/*.png   DIR/test/<defect>/*.png
    DIR/ground_truth/<defect>/<name>_mask.png     (white = defective pixel)

Pixel AUROC (the MVTec benchmark's pixel-level figure): every test pixel of the images a method
scored, labelled by its mask (test/good images: no defective pixel), ranked by the map
(scikit-learn's roc_auc_score over all pixels at once). Masks are resized to the split's image
size by the split's own resize and a pixel counts as defective where the resized mask is at least
half white.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .runs import Run, atomic_path, write_json

MASK_FOLDER = "ground_truth"
MASK_SUFFIX = "_mask.png"


# ---------------------------------------------------------------------------------------------
# Overlays


def overlay_name(index: int, name: str) -> str:
    """A unique PNG name for image `index` of a call: 00012_<its file stem>.png."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).stem)[:60] or "image"
    return f"{index:05d}_{stem}.png"


def overlay(original: torch.Tensor, amap: torch.Tensor, vmax: float | None = None, *,
            min_size: int = 128) -> torch.Tensor:
    """uint8 RGB (3, H', 2W' + 4): the image, a gap, the image under its map (matplotlib's jet
    colour map, half transparent; 0 = blue, `vmax` or more = red; vmax None: the map's own
    maximum). Images smaller than `min_size` are enlarged by whole pixels, so 8x8 digits stay
    sharp."""
    from matplotlib import colormaps

    image = original.float() / 255.0
    image = image.expand(3, -1, -1) if image.shape[0] == 1 else image[:3]
    top = float(vmax) if vmax is not None and vmax > 0 else float(amap.max().clamp_min(1e-12))
    lo = min(0.0, float(amap.min())) if vmax is None else 0.0
    heat = torch.from_numpy(colormaps["jet"](((amap - lo) / (top - lo)).clamp(0, 1).numpy())
                            [..., :3]).permute(2, 0, 1).float()
    blended = 0.5 * image + 0.5 * heat
    gap = torch.ones(3, image.shape[1], 4)
    out = torch.cat([image, gap, blended], 2)
    factor = max(1, -(-min_size // max(1, image.shape[1])))
    if factor > 1:
        out = out.repeat_interleave(factor, 1).repeat_interleave(factor, 2)
    return (out * 255).round().to(torch.uint8)


def save_overlay(path: str | Path, original: torch.Tensor, amap: torch.Tensor,
                 vmax: float | None = None) -> Path:
    """Save `overlay` as a PNG (PIL), atomically."""
    from PIL import Image

    pixels = overlay(original, amap, vmax).permute(1, 2, 0).numpy()
    with atomic_path(path) as tmp:
        Image.fromarray(pixels).save(tmp, format="PNG")
    return Path(path)


def overlay_grid(overlays: Sequence[torch.Tensor], titles: Sequence[str] = (), *,
                 columns: int = 3):
    """The overlays side by side in a matplotlib figure, with a title each."""
    import matplotlib.pyplot as plt

    rows = max(1, -(-len(overlays) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(3.8 * columns, 2.3 * rows), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if k < len(overlays):
            ax.imshow(overlays[k].permute(1, 2, 0).numpy())
            if k < len(titles):
                ax.set_title(titles[k], fontsize=8)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# Ground-truth masks and pixel AUROC


def mask_path(root: Path, ref: str) -> Path | None:
    """The MVTec mask of test image `ref` ("test/<defect>/<name>.png"); None for test/good."""
    parts = Path(ref).parts
    if len(parts) < 3 or parts[0] != "test" or parts[1] == "good":
        return None
    return root / MASK_FOLDER / parts[1] / (Path(ref).stem + MASK_SUFFIX)


def has_masks(split) -> bool:
    """Whether the split is a folder dataset with a ground_truth/ folder beside train/ and test/."""
    root = split.config.get("data_root")
    return split.dataset == "folder" and bool(root) and (Path(root) / MASK_FOLDER).is_dir()


def read_masks(split, indices: torch.Tensor, size: int) -> torch.Tensor:
    """Boolean masks (N, size, size) of the split's test images `indices`."""
    from PIL import Image

    from .sources import resize

    root = Path(split.config["data_root"])
    refs = split.config["test"]
    out = torch.zeros(len(indices), size, size, dtype=torch.bool)
    for row, i in enumerate(indices.tolist()):
        path = mask_path(root, refs[i])
        if path is None:
            continue
        if not path.is_file():
            raise FileNotFoundError(f"no mask for {refs[i]}: expected {path} (MVTec layout: "
                                    f"{MASK_FOLDER}/<defect>/<name>{MASK_SUFFIX})")
        with Image.open(path) as img:
            mask = torch.from_numpy(np.asarray(img.convert("L"), dtype=np.uint8).copy())
        out[row] = resize(mask[None, None], size)[0, 0] >= 128
    return out


def pixel_auroc(maps: torch.Tensor | Sequence[torch.Tensor], masks: torch.Tensor) -> float:
    """AUROC of per-pixel scores against boolean masks, over all pixels of all images."""
    from sklearn.metrics import roc_auc_score

    values = torch.stack(list(maps)) if not isinstance(maps, torch.Tensor) else maps
    labels = masks.reshape(-1).numpy()
    if labels.all() or not labels.any():
        raise ValueError("pixel AUROC needs defective and defect-free pixels; the masks hold only "
                         "one kind")
    return float(roc_auc_score(labels, values.reshape(-1).double().numpy()))


def record_pixel_auroc(run: Run, split, methods: str | Sequence[str], *,
                       device: str = "auto") -> dict[str, float]:
    """Where the split has ground-truth masks: each method's pixel AUROC on the test images it
    scored (scores/<method>.npz), recorded as `pixel_auroc` in its metrics.json entry. Methods
    the run does not have, and methods without maps, are passed over (with a line saying so);
    without masks nothing happens. Returns {method: pixel AUROC}."""
    from .detector import Detector, NoMap
    from .evaluate import load_scores, read_metrics

    if not has_masks(split):
        return {}
    methods = [methods] if isinstance(methods, str) else list(methods)
    have = read_metrics(run).get("methods", {})
    out = {}
    for method in methods:
        if method not in have:
            continue
        indices = torch.as_tensor(load_scores(run, method).test_indices)
        detector = Detector.load(run.root, method, device=device, verbose=False, split=split)
        try:
            maps = detector.anomaly_map(split.test.images[indices])
        except NoMap as err:
            print(f"{method}: no pixel AUROC ({err})")
            continue
        out[method] = pixel_auroc(maps, read_masks(split, indices, split.image_size))
        data = read_metrics(run)
        data["methods"][method]["pixel_auroc"] = out[method]
        write_json(run.metrics_path, data)
        print(f"{method}: pixel AUROC {out[method]:.3f} on {len(indices)} test images "
              f"({detector.map_note})")
    return out


__all__ = ["has_masks", "mask_path", "overlay", "overlay_grid", "overlay_name", "pixel_auroc",
           "read_masks", "record_pixel_auroc", "save_overlay"]
