"""Image complexity, the bias of reconstruction scores, and a score corrected for it.

A reconstruction error is to a large part a measure of how much detail an image has: a smooth
photo is redrawn well whatever it shows. Serrà et al. ("Input complexity and out-of-distribution
detection with likelihood-based generative models", ICLR 2020) estimate an image's complexity by
the length of its losslessly compressed file; here, its PNG size in bits per pixel and channel
(Pillow's PNG encoder at compression level 9, on the split's uint8 image).

`Correction` removes from a method's score the part that complexity predicts, fitted on the
validation normals only (scikit-learn's linear regression of the score on complexity); the
corrected score is the residual. Whether it helps is read on the development split
(`compare`), never on the test set. A notebook records the corrected score with
`correct_tables` (complexity measured on the images the method scored, as a detector measures
it on a new image); the score as scored stays in the tables as `score_raw`, and the fitted line
goes into the method's metrics.json parameters, from which `scorers.build` applies it again.
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


def run_complexity(run, image_size: int | None = None) -> dict[str, np.ndarray]:
    """`split_complexity` of a run folder's split, read again from its split.json (the data
    must be where the split was made), at `image_size` (None: the split's own)."""
    import json

    from .data import load_one_class

    if not run.split_path.is_file():
        raise FileNotFoundError(f"{run.root} has no split.json; run 00_data_prep with this run_dir")
    saved = json.loads(run.split_path.read_text())
    split = load_one_class(saved["dataset"], saved["normal_class"], data_root=saved.get("data_root"),
                           image_size=image_size or saved["image_size"], seed=saved["seed"],
                           val_fraction=saved["val_fraction"])
    return split_complexity(split)


def for_scores(complexity: dict[str, np.ndarray], saved: SavedScores) -> dict[str, np.ndarray]:
    """`split_complexity` restricted to the test and development images a method scored (its
    test_indices, and its dev_indices where it scored a development sample)."""
    out = {**complexity, "test": complexity["test"][np.asarray(saved.test_indices)]}
    n_dev = len(saved.dev.get("score", ()))
    if saved.dev_indices is not None and "dev" in complexity:
        out["dev"] = complexity["dev"][np.asarray(saved.dev_indices)]
    elif n_dev and "dev" in complexity and n_dev != len(complexity["dev"]):
        raise ValueError(f"the development scores cover {n_dev} of {len(complexity['dev'])} images "
                         "and the score file, older than dev_indices, does not say which: run the "
                         "method's notebook again with resume true to record them")
    return out


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

    def describe(self) -> str:
        sign = "+" if self.intercept >= 0 else "-"
        return f"score - ({self.slope:.4g} x complexity {sign} {abs(self.intercept):.4g})"

    def params(self) -> dict:
        """What a method's metrics.json entry records (`from_params` reads it back)."""
        return {"slope": self.slope, "intercept": self.intercept}

    @classmethod
    def from_params(cls, params: dict | None) -> Correction | None:
        """The correction a method's recorded parameters name (None: scored as is)."""
        value = (params or {}).get(PARAM)
        return None if not value else cls(float(value["slope"]), float(value["intercept"]))


PARAM = "complexity_correction"  # the key of the fitted line in a method's recorded params
RAW = "score_raw"  # the score as scored, kept beside the corrected one


def correct_tables(split: OneClassSplit, val: dict, test: dict, dev: dict | None = None, *,
                   test_indices=None) -> Correction:
    """Record the corrected score in a notebook's score tables, in place: each table's `score`
    becomes the score minus the line fitted on the validation normals (complexity of the
    split's images as the method scored them), the score as scored is kept as `score_raw`.
    `test_indices`: the test images `test` scored (None: all). Returns the fitted line."""
    test_images = split.test.images if test_indices is None else \
        split.test.images[torch.as_tensor(np.asarray(test_indices))]
    measured = {"val": png_bits_per_dim(split.val), "test": png_bits_per_dim(test_images)}
    if dev is not None:
        measured["dev"] = png_bits_per_dim(split.dev)
    fitted = Correction.fit(val["score"], measured["val"])
    for part, table in (("val", val), ("dev", dev), ("test", test)):
        if table is None:
            continue
        if len(table["score"]) != len(measured[part]):
            raise ValueError(f"the {part} table has {len(table['score'])} scores for "
                             f"{len(measured[part])} images; pass the test_indices it scored")
        table[RAW] = table["score"]
        table["score"] = torch.from_numpy(fitted(table["score"], measured[part]))
    return fitted


def as_scored(table: dict):
    """A score table's score before any recorded correction (`score_raw`, else `score`)."""
    return table.get(RAW, table["score"])


def compare(saved: SavedScores, complexity: dict[str, np.ndarray]) -> dict:
    """One method's figures with and without the correction: the Spearman correlation of its
    test score (as scored: `score_raw` where the notebook recorded the corrected one) with
    complexity, and the development AUROC raw and corrected (validation normals against
    development anomalies; None without them). Reads no test label."""
    from scipy.stats import spearmanr

    val, test = as_scored(saved.val), as_scored(saved.test)
    fitted = Correction.fit(val, complexity["val"])
    out = {"slope": fitted.slope,
           "test_spearman": float(spearmanr(test, complexity["test"]).statistic),
           "dev_auroc": None, "dev_auroc_corrected": None}
    if len(saved.dev.get("score", ())):
        dev = as_scored(saved.dev)
        out["dev_auroc"] = dev_metrics(val, dev)["auroc"]
        out["dev_auroc_corrected"] = dev_metrics(fitted(val, complexity["val"]),
                                                 fitted(dev, complexity["dev"]))["auroc"]
    return out
