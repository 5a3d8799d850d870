"""Image complexity, the bias of reconstruction scores, and a score corrected for it.

A reconstruction error is to a large part a measure of how much detail an image has: a smooth
photo is redrawn well whatever it shows. Serrà et al. ("Input complexity and out-of-distribution
detection with likelihood-based generative models", ICLR 2020) estimate an image's complexity by
the length of its losslessly compressed file; here, its PNG size in bits per pixel and channel
(Pillow's PNG encoder at compression level 9, on the split's uint8 image).

`Correction` removes from a method's score the part that complexity predicts, fitted on the
validation normals only (scikit-learn's linear regression of the score on complexity); the
corrected score is the residual. Whether it helps is read on the development split
(`compare`), never on the test set.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from .data import ImageSet, OneClassSplit
from .evaluate import SavedScores, _np, dev_metrics

PNG_LEVEL = 9


def png_bits_per_dim(images: torch.Tensor | ImageSet) -> np.ndarray:
    """Each uint8 image's (N, C, H, W) PNG size in bits per pixel and channel."""
    if isinstance(images, ImageSet):
        images = images.images
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise TypeError(f"complexity is measured on uint8 images shaped (N, C, H, W); got "
                        f"{images.dtype} {tuple(images.shape)}")
    n, c, h, w = images.shape
    arrays = images.permute(0, 2, 3, 1).numpy()
    out = np.empty(n)
    for i, a in enumerate(arrays):
        buffer = io.BytesIO()
        Image.fromarray(a[..., 0] if c == 1 else a).save(buffer, format="PNG",
                                                         compress_level=PNG_LEVEL)
        out[i] = 8.0 * buffer.tell() / (c * h * w)
    return out


def split_complexity(split: OneClassSplit) -> dict[str, np.ndarray]:
    """Complexity of the validation normals, the development anomalies and the test images."""
    return {"val": png_bits_per_dim(split.val.images), "dev": png_bits_per_dim(split.dev.images),
            "test": png_bits_per_dim(split.test.images)}


def run_complexity(run) -> dict[str, np.ndarray]:
    """`split_complexity` of a run folder's split, read again from its split.json (the data
    must be where the split was made)."""
    import json

    from .data import load_one_class

    if not run.split_path.is_file():
        raise FileNotFoundError(f"{run.root} has no split.json; run 00_data_prep with this run_dir")
    saved = json.loads(run.split_path.read_text())
    split = load_one_class(saved["dataset"], saved["normal_class"], data_root=saved.get("data_root"),
                           image_size=saved["image_size"], seed=saved["seed"],
                           val_fraction=saved["val_fraction"])
    return split_complexity(split)


def for_scores(complexity: dict[str, np.ndarray], saved: SavedScores) -> dict[str, np.ndarray]:
    """`split_complexity` restricted to the test images a method scored (its test_indices)."""
    return {**complexity, "test": complexity["test"][np.asarray(saved.test_indices)]}


@dataclass(frozen=True)
class Correction:
    """score - (slope * complexity + intercept), the line fitted on validation normals."""

    slope: float
    intercept: float

    @classmethod
    def fit(cls, val_scores, val_complexity) -> Correction:
        from sklearn.linear_model import LinearRegression

        x, y = _np(val_complexity).reshape(-1, 1), _np(val_scores)
        if len(y) < 2:
            raise ValueError("the complexity correction is fitted on at least 2 validation normals; "
                             "use val_fraction > 0")
        line = LinearRegression().fit(x, y)
        return cls(float(line.coef_[0]), float(line.intercept_))

    def __call__(self, scores, complexity) -> np.ndarray:
        return _np(scores) - (self.slope * _np(complexity) + self.intercept)


def compare(saved: SavedScores, complexity: dict[str, np.ndarray]) -> dict:
    """One method's figures with and without the correction: the Spearman correlation of its
    test score with complexity, and the development AUROC raw and corrected (validation normals
    against development anomalies; None without them). Reads no test label."""
    from scipy.stats import spearmanr

    fitted = Correction.fit(saved.val["score"], complexity["val"])
    out = {"slope": fitted.slope,
           "test_spearman": float(spearmanr(saved.test["score"], complexity["test"]).statistic),
           "dev_auroc": None, "dev_auroc_corrected": None}
    if len(saved.dev.get("score", ())):
        out["dev_auroc"] = dev_metrics(saved.val["score"], saved.dev["score"])["auroc"]
        out["dev_auroc_corrected"] = dev_metrics(
            fitted(saved.val["score"], complexity["val"]),
            fitted(saved.dev["score"], complexity["dev"]))["auroc"]
    return out


def corrected_scores(saved: SavedScores, complexity: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The corrected score of every set (val, dev, test), the line fitted on validation normals."""
    fitted = Correction.fit(saved.val["score"], complexity["val"])
    return {part: fitted(getattr(saved, part)["score"], complexity[part])
            for part in ("val", "dev", "test") if len(getattr(saved, part).get("score", ()))}
