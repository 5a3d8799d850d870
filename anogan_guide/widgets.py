"""ipywidgets explorers. Each returns an `ipywidgets.interactive`, which draws once when created
(so it can be tested headless) and redraws when a control moves."""

from __future__ import annotations

import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch

from .data import OneClassSplit
from .plots import image_grid


def class_browser(split: OneClassSplit, per_page: int = 32) -> widgets.interactive:
    """Browse the images of the split by part (train / val / test) and original test class."""
    parts = {"train (normal)": (split.train, None), "val (normal)": (split.val, None)}
    for i, name in enumerate(split.class_names):
        if (split.test_classes == i).any():
            tag = "normal" if name == str(split.normal_class) else "anomaly"
            parts[f"test class {name} ({tag})"] = (split.test, i)

    def show(part: str, page: int = 0):
        images, cls = parts[part]
        index = (torch.arange(len(images)) if cls is None
                 else torch.nonzero(split.test_classes == cls).flatten())
        chosen = index[page * per_page:(page + 1) * per_page]
        if len(chosen) == 0:
            print(f"{part}: no images on page {page} ({len(index)} images)")
            return None
        fig = image_grid(torch.stack([images[int(i)][0] for i in chosen]),
                         title=f"{part}: images {page * per_page}-{page * per_page + len(chosen) - 1}"
                               f" of {len(index)}")
        plt.show()
        return fig

    return widgets.interactive(show, part=list(parts),
                               page=widgets.IntSlider(0, 0, 50, 1, description="page"))


def lambda_explorer(val_parts: dict, test_parts: dict, test_labels, *, lam: float = 0.1,
                    first: str = "residual", second: str = "discrimination"
                    ) -> widgets.interactive:
    """Slide the weight lam of score = (1 - lam) * first + lam * second. The score is recombined
    from the stored per-image parts (no new mapping); the threshold comes from the validation
    normals, as everywhere."""
    from .evaluate import evaluate
    from .plots import term_histograms

    def show(lam: float = lam):
        val = (1 - lam) * torch.as_tensor(val_parts[first]) + lam * torch.as_tensor(
            val_parts[second])
        test = (1 - lam) * torch.as_tensor(test_parts[first]) + lam * torch.as_tensor(
            test_parts[second])
        m = evaluate(val, test, test_labels)
        print(f"lambda={lam:.2f}  AUROC={m['auroc']:.3f}  AUPRC={m['auprc']:.3f}  "
              f"F1={m['f1']:.3f} (threshold {m['threshold']:.4g} from validation normals)")
        term_histograms({f"(1-{lam:.2f})*{first} + {lam:.2f}*{second}": test}, test_labels)
        plt.show()
        return m

    return widgets.interactive(show, lam=widgets.FloatSlider(
        value=lam, min=0.0, max=1.0, step=0.01, description="lambda", continuous_update=False))


def threshold_explorer(val_scores, test_scores, test_labels) -> widgets.interactive:
    """Move the decision threshold and watch the confusion matrix on the test set; it starts at
    the threshold fitted on the validation normals."""
    import numpy as np

    from .evaluate import threshold_from_validation
    from .plots import confusion_counts

    val = np.asarray(torch.as_tensor(val_scores).double())
    test = np.asarray(torch.as_tensor(test_scores).double())
    start = threshold_from_validation(val)
    lo, hi = float(min(val.min(), test.min())), float(max(val.max(), test.max()))

    def show(threshold: float = start):
        cm = confusion_counts(test, test_labels, threshold)
        (tn, fp), (fn, tp) = cm.tolist()
        fig, ax = plt.subplots(figsize=(3.4, 3.0))
        ax.imshow(cm, cmap="Blues")
        for (i, j), v in np.ndenumerate(cm):
            ax.text(j, i, str(v), ha="center", va="center",
                    color="white" if v > cm.max() / 2 else "black")
        ax.set_xticks([0, 1], ["called normal", "called anomalous"])
        ax.set_yticks([0, 1], ["normal", "anomaly"])
        ax.set_title(f"threshold {threshold:.4g}")
        fig.tight_layout()
        tpr, fpr = tp / max(tp + fn, 1), fp / max(fp + tn, 1)
        precision = tp / max(tp + fp, 1)
        f1 = 2 * precision * tpr / max(precision + tpr, 1e-12)
        print(f"anomalies caught {tpr:.1%}, normals flagged {fpr:.1%}, precision {precision:.1%},"
              f" F1 {f1:.3f}  (validation threshold: {start:.4g})")
        plt.show()
        return cm

    return widgets.interactive(show, threshold=widgets.FloatSlider(
        value=start, min=lo, max=hi, step=(hi - lo) / 400 or 1.0, description="threshold",
        readout_format=".4g", continuous_update=False))
