"""Matplotlib figures shared by every notebook. Each function returns its Figure.

Grids go through torchvision's make_grid; score plots take score tables (term -> per-image values)
and 0/1 labels, so no plot special-cases a method.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from .runs import epoch_grids


def _np(values) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


MAX_COLUMNS = 4  # panels per row: a figure of many panels grows downwards, not sideways


def panel_grid(n: int, *, width: float = 3.4, height: float = 2.8,
               max_columns: int = MAX_COLUMNS) -> tuple[Figure, list]:
    """A figure with `n` panels in rows of at most `max_columns`, each `width` x `height` inches;
    returns it and the n axes in reading order (the grid's unused places removed), so a
    chart holds its shape for any number of methods or terms."""
    n = max(1, n)
    columns = min(n, max_columns)
    rows = -(-n // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(width * columns, height * rows),
                             squeeze=False)
    flat = list(axes.flat)
    for ax in flat[n:]:
        fig.delaxes(ax)
    return fig, flat[:n]


def image_grid(images: torch.Tensor, *, title: str = "", value_range=(0.0, 1.0), nrow: int = 8,
               ax=None) -> Figure:
    """Show a batch of images as one grid (torchvision's make_grid)."""
    from torchvision.utils import make_grid

    lo, hi = value_range
    images = ((images.detach().float().cpu() - lo) / (hi - lo)).clamp(0, 1)
    grid = make_grid(images, nrow=nrow, padding=2, pad_value=1.0)
    if ax is None:
        _, ax = plt.subplots(figsize=(min(12, 1.2 * nrow), 1.2 * max(1, -(-len(images) // nrow))))
    ax.imshow(grid.permute(1, 2, 0).numpy(), cmap="gray" if images.shape[1] == 1 else None)
    ax.set_title(title)
    ax.axis("off")
    return ax.figure


def loss_curves(history: Mapping[str, Sequence[float]], *, title: str = "training losses",
                smooth: int = 1, xlabel: str = "step") -> Figure:
    """One panel per loss, per step (moving average over `smooth` steps; `xlabel="epoch"` for
    per-epoch histories)."""
    names = list(history)
    fig, axes = panel_grid(len(names), width=3.2, height=2.6)
    for ax, name in zip(axes, names, strict=True):
        values = np.asarray(history[name], dtype=float)
        if smooth > 1 and len(values) >= smooth:
            values = np.convolve(values, np.ones(smooth) / smooth, mode="valid")
        ax.plot(values, lw=1)
        ax.set_title(name)
        ax.set_xlabel(xlabel)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def roc_curves(curves: Mapping[str, tuple], *, title: str = "ROC (anomaly = positive)") -> Figure:
    """ROC curves of several score sets on one plot: {name: (scores, labels)}."""
    from sklearn.metrics import roc_auc_score, roc_curve

    fig, ax = plt.subplots(figsize=(4.2, 4))
    for name, (scores, labels) in curves.items():
        fpr, tpr, _ = roc_curve(_np(labels), _np(scores))
        ax.plot(fpr, tpr, label=f"{name} (AUROC {roc_auc_score(_np(labels), _np(scores)):.3f})")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def term_histograms(terms: Mapping[str, torch.Tensor], labels, *, bins: int = 40,
                    title: str = "") -> Figure:
    """A histogram per score term, normal vs anomalous test images. `labels` is one 0/1 array
    for every term, or a mapping term -> labels when the terms come from different test images
    (methods scored on different subsets)."""
    names = list(terms)
    fig, axes = panel_grid(len(names), width=3.4, height=2.8)
    for ax, name in zip(axes, names, strict=True):
        mine = _np(labels[name] if isinstance(labels, Mapping) else labels).astype(bool)
        values = _np(terms[name]).astype(float)
        edges = np.histogram_bin_edges(values, bins=bins)
        ax.hist(values[~mine], bins=edges, alpha=0.6, density=True, label="normal")
        ax.hist(values[mine], bins=edges, alpha=0.6, density=True, label="anomalous")
        ax.set_title(name)
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def box_per_class(values, classes, class_names: Sequence[str], *, normal_class=None,
                  ylabel: str = "score") -> Figure:
    """A box plot of one per-image value for each original test class."""
    values, classes = _np(values).astype(float), _np(classes)
    present = [i for i in range(len(class_names)) if (classes == i).any()]
    fig, ax = plt.subplots(figsize=(max(4, 0.6 * len(present)), 3))
    ax.boxplot([values[classes == i] for i in present], showfliers=False)
    ax.set_xticks(range(1, len(present) + 1), [class_names[i] for i in present])
    if normal_class is not None and str(normal_class) in class_names:
        ax.axvspan(present.index(class_names.index(str(normal_class))) + 0.5,
                   present.index(class_names.index(str(normal_class))) + 1.5, alpha=0.15,
                   color="green", label="normal class")
        ax.legend(fontsize=8)
    ax.set_xlabel("test class")
    ax.set_ylabel(ylabel)
    fig.tight_layout()
    return fig


def pca_scatter(features, labels, *, title: str = "PCA of the latent space", seed: int = 0) -> Figure:
    """2-d PCA (scikit-learn) of per-image features, normal vs anomalous."""
    from sklearn.decomposition import PCA

    x = _np(features).reshape(len(_np(labels)), -1).astype(float)
    labels = _np(labels).astype(bool)
    xy = PCA(n_components=2, random_state=seed).fit_transform(x)
    fig, ax = plt.subplots(figsize=(4.2, 4))
    ax.scatter(*xy[~labels].T, s=4, alpha=0.5, label="normal")
    ax.scatter(*xy[labels].T, s=4, alpha=0.5, label="anomalous")
    ax.set_title(title)
    ax.legend(fontsize=8, markerscale=3)
    fig.tight_layout()
    return fig


def confusion_counts(scores, labels, threshold: float) -> np.ndarray:
    """[[TN, FP], [FN, TP]] at a threshold (scikit-learn's confusion_matrix)."""
    from sklearn.metrics import confusion_matrix

    return confusion_matrix(_np(labels).astype(int), (_np(scores) > threshold).astype(int),
                            labels=[0, 1])


def contingency(clusters, classes, class_names: Sequence[str], *, title: str = "") -> Figure:
    """A heat map of how many images of each true class fall in each cluster."""
    clusters, classes = _np(clusters).astype(int), _np(classes).astype(int)
    present = [i for i in range(len(class_names)) if (classes == i).any()]
    ids = np.unique(clusters)
    counts = np.array([[int(((classes == c) & (clusters == k)).sum()) for k in ids]
                       for c in present])
    fig, ax = plt.subplots(figsize=(0.45 * len(ids) + 1.8, 0.4 * len(present) + 1.2))
    ax.imshow(counts, cmap="Blues")
    for (r, k), n in np.ndenumerate(counts):
        if n:
            ax.text(k, r, str(n), ha="center", va="center", fontsize=6)
    ax.set_xticks(range(len(ids)), [str(k) for k in ids])
    ax.set_yticks(range(len(present)), [class_names[c] for c in present])
    ax.set_xlabel("cluster")
    ax.set_ylabel("true class")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def rotation_confusions(matrices: Mapping[str, torch.Tensor | np.ndarray],
                        names: Sequence[str] = ("0°", "90°", "180°", "270°"), *,
                        title: str = "") -> Figure:
    """One panel per set of images (e.g. validation normals, test anomalies): which quarter turn
    a rotation network predicted (columns) for the turn it was shown (rows), as shares of a row
    (scikit-learn's ConfusionMatrixDisplay)."""
    from sklearn.metrics import ConfusionMatrixDisplay

    fig, axes = panel_grid(len(matrices), width=3.2, height=3.0)
    for ax, (label, counts) in zip(axes, matrices.items(), strict=True):
        counts = _np(counts).astype(float)
        shares = counts / np.maximum(counts.sum(1, keepdims=True), 1.0)
        ConfusionMatrixDisplay(shares, display_labels=list(names)).plot(
            ax=ax, colorbar=False, values_format=".2f", cmap="Blues")
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("predicted turn")
        ax.set_ylabel("turn shown")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def scores_against_complexity(scores: Mapping[str, tuple], *, title: str = "") -> Figure:
    """One panel per method: each test image's score against its complexity (PNG bits per
    dimension, complexity.py), normals and anomalies in two colours, with the Spearman
    correlation in the title. `scores`: {method: (scores, complexity, 0/1 labels)}."""
    from scipy.stats import spearmanr

    fig, axes = panel_grid(len(scores), width=3.4, height=2.8)
    for ax, (name, (values, complexity, labels)) in zip(axes, scores.items(), strict=True):
        values, complexity = _np(values).astype(float), _np(complexity).astype(float)
        mine = _np(labels).astype(bool)
        ax.scatter(complexity[~mine], values[~mine], s=3, alpha=0.4, label="normal")
        ax.scatter(complexity[mine], values[mine], s=3, alpha=0.2, label="anomalous")
        rho = spearmanr(values, complexity).statistic
        ax.set_title(f"{name} (Spearman {rho:+.2f})", fontsize=9)
        ax.set_xlabel("PNG bits per dimension")
        ax.set_ylabel("score")
    axes[0].legend(fontsize=8, markerscale=3)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def term_scatter(x, y, labels, *, xlabel: str, ylabel: str, title: str = "") -> Figure:
    """Two per-image terms against each other (e.g. l_rot against l_enc), normals and anomalies
    in two colours, a log axis for a positive term spanning decades, the Spearman correlation
    of the two in the title: a low one means the terms see different things."""
    from scipy.stats import spearmanr

    x, y, anomalous = _np(x).astype(float), _np(y).astype(float), _np(labels).astype(bool)
    fig, ax = plt.subplots(figsize=(4.4, 3.6))
    ax.scatter(x[~anomalous], y[~anomalous], s=4, alpha=0.5, label="normal")
    ax.scatter(x[anomalous], y[anomalous], s=4, alpha=0.25, label="anomalous")
    for values, set_scale in ((x, ax.set_xscale), (y, ax.set_yscale)):
        if (values > 0).all() and values.max() > 20 * values.min():  # spans decades
            set_scale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(f"{title} (Spearman {spearmanr(x, y).statistic:+.2f})".strip(), fontsize=9)
    ax.legend(fontsize=8, markerscale=3)
    fig.tight_layout()
    return fig


def training_grids(train_img, method: str, *, first: bool = False) -> Figure:
    """The grid the training loop saved for `method`'s last epoch in the folder `train_img`
    (and for its first, with `first`), each titled with its file name. A run folder given its
    checkpoints without their grids (copied by hand) has none: the figure says so."""
    grids = epoch_grids(train_img, method)
    chosen = list(dict.fromkeys(grids[:1] + grids[-1:])) if first else grids[-1:]
    if not chosen:
        fig, ax = plt.subplots(figsize=(6, 0.8))
        ax.axis("off")
        ax.text(0.5, 0.5, f"no {method}_epoch*.png in {train_img}: the training grids were not "
                f"saved with these checkpoints", ha="center", va="center", fontsize=9)
        return fig
    images = [plt.imread(path) for path in chosen]
    fig, axes = panel_grid(len(images), width=6.0, height=6.0 * images[0].shape[0]
                           / images[0].shape[1] + 0.4, max_columns=2)
    for ax, path, image in zip(axes, chosen, images, strict=True):
        ax.imshow(image, interpolation="nearest")
        ax.set_title(path.stem, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    return fig
