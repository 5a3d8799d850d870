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


# ---------------------------------------------------------------------------------------------
# The results notebook (07): every method's saved scores, no retraining.


def _confusion_html(cm, threshold: float, start: float) -> str:
    """The confusion matrix as a small HTML table (text a browser test can read)."""
    (tn, fp), (fn, tp) = (int(v) for v in cm[0]), (int(v) for v in cm[1])
    cell = "padding:2px 10px;border:1px solid #bbb;text-align:right"
    return (f"<b>threshold {threshold:.4g}</b> (validation threshold {start:.4g})"
            f"<table style='border-collapse:collapse'>"
            f"<tr><th></th><th style='{cell}'>called normal</th>"
            f"<th style='{cell}'>called anomalous</th></tr>"
            f"<tr><th style='{cell}'>normal</th><td style='{cell}'>TN {tn}</td>"
            f"<td style='{cell}'>FP {fp}</td></tr>"
            f"<tr><th style='{cell}'>anomaly</th><td style='{cell}'>FN {fn}</td>"
            f"<td style='{cell}'>TP {tp}</td></tr></table>")


def method_threshold_explorer(saved: dict, test_images=None, *, max_images: int = 16
                              ) -> widgets.VBox:
    """Pick a method and move its threshold: the confusion matrix, precision / recall and the
    misclassified test images update. `saved` maps a method to its `evaluate.SavedScores`;
    `test_images` is the split's test ImageSet (indexed by each method's saved test_indices).
    The slider starts at the method's threshold from the validation normals. The returned box
    has `.method`, `.threshold`, `.confusion` and `.stats` for scripted use."""
    import numpy as np

    from .evaluate import threshold_from_validation
    from .plots import confusion_counts

    if not saved:
        raise ValueError("no saved scores to explore; run a method's notebook with this run_dir")
    method = widgets.Dropdown(options=list(saved), description="method")
    threshold = widgets.FloatSlider(description="threshold", readout_format=".4g",
                                    continuous_update=False,
                                    layout=widgets.Layout(width="60%")).add_class("ag-threshold")
    confusion = widgets.HTML().add_class("ag-confusion")
    stats = widgets.HTML().add_class("ag-stats")
    images = widgets.Output()
    state = {"busy": False}

    def arrays(name: str):
        s = saved[name]
        return np.asarray(s.val["score"], float), np.asarray(s.test["score"], float), s

    def redraw(*_):
        if state["busy"]:
            return
        val, test, s = arrays(method.value)
        start, t = threshold_from_validation(val), float(threshold.value)
        cm = confusion_counts(test, s.test_labels, t)
        (tn, fp), (fn, tp) = cm.tolist()
        confusion.value = _confusion_html(cm, t, start)
        precision, recall = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
        f1 = 2 * precision * recall / max(precision + recall, 1e-12)
        stats.value = (f"precision {precision:.3f} &nbsp; recall (anomalies caught) {recall:.3f}"
                       f" &nbsp; F1 {f1:.3f} &nbsp; normals flagged {fp / max(fp + tn, 1):.1%}"
                       f" &nbsp; ({len(test)} test images)")
        images.clear_output(wait=True)
        if test_images is None:
            return
        with images:
            called = test > t
            wrong = {"missed anomalies (called normal)": (s.test_labels == 1) & ~called,
                     "false alarms (normals called anomalous)": (s.test_labels == 0) & called}
            shown = {k: np.flatnonzero(v) for k, v in wrong.items() if v.any()}
            if not shown:
                print("no misclassified test image at this threshold")
                return
            fig, axes = plt.subplots(len(shown), 1, figsize=(9, 1.6 * len(shown)), squeeze=False)
            for ax, (title, where) in zip(axes[:, 0], shown.items(), strict=True):
                # the most confidently wrong first: furthest from the threshold
                where = where[np.argsort(-np.abs(test[where] - t))][:max_images]
                batch, _ = test_images[torch.as_tensor(s.test_indices[where])]
                image_grid(batch, title=f"{title}: {int(wrong[title].sum())}", ax=ax,
                           nrow=max_images)
            fig.tight_layout()
            plt.show()
            plt.close(fig)  # redrawn on every move: do not keep old figures alive

    def choose(*_):
        val, test, _ = arrays(method.value)
        lo, hi = float(min(val.min(), test.min())), float(max(val.max(), test.max()))
        hi = hi if hi > lo else lo + 1.0
        state["busy"] = True
        try:  # widen, place, then narrow: the slider never holds a value outside its range
            threshold.max, threshold.min = max(hi, threshold.max), min(lo, threshold.min)
            threshold.step = (hi - lo) / 400
            threshold.value = threshold_from_validation(val)
            threshold.min, threshold.max = lo, hi
        finally:
            state["busy"] = False
        redraw()

    method.observe(choose, names="value")
    threshold.observe(redraw, names="value")
    choose()
    box = widgets.VBox([method, threshold, confusion, stats, images]).add_class(
        "ag-threshold-explorer")  # the CSS classes let a browser test find its parts
    box.method, box.threshold, box.confusion, box.stats = method, threshold, confusion, stats
    return box


def weights_from_description(text: str) -> dict[str, float]:
    """{term: weight} from a fitted combination as the hybrid records it in metrics.json
    ("0.250*z(l_enc) + 0.250*z(l_con) + ..."); {} when there is none."""
    import re

    return {term: float(w) for w, term in
            re.findall(r"([-+]?[\d.]+(?:[eE][-+]?\d+)?)\*z\(([^)]+)\)", text or "")}


def term_weight_explorer(saved, terms=None, weights=None, *, max_weight: float = 2.0
                         ) -> widgets.interactive:
    """A weight slider per score term: score = sum_t w_t * z_t, each term standardised with the
    validation normals' mean and std (as the hybrid does); the threshold again comes from the
    validation normals. `saved` is one method's `evaluate.SavedScores`; `terms` default to the
    hybrid's (l_enc, l_con, l_adv, l_grad) where present, `weights` to equal ones."""
    from .complexity import RAW
    from .evaluate import Standardizer, evaluate
    from .plots import term_histograms

    if terms is None:
        hybrid_terms = [t for t in ("l_enc", "l_con", "l_adv", "l_grad") if t in saved.test]
        terms = hybrid_terms or [t for t in saved.test if t not in ("score", RAW)
                                 and t in saved.val]
    missing = [t for t in terms if t not in saved.test or t not in saved.val]
    if missing or not terms:
        raise ValueError(f"terms {missing or terms} are not in the saved scores; use some of "
                         f"{', '.join(k for k in saved.test if k in saved.val)}")
    weights = dict(weights or {t: 1.0 / len(terms) for t in terms})
    scalers = {t: Standardizer.fit(saved.val[t]) for t in terms}
    val_z = {t: scalers[t](torch.as_tensor(saved.val[t]).double()) for t in terms}
    test_z = {t: scalers[t](torch.as_tensor(saved.test[t]).double()) for t in terms}
    labels = saved.test_labels

    def show(**w: float):
        val = sum(w[t] * val_z[t] for t in terms)
        test = sum(w[t] * test_z[t] for t in terms)
        m = evaluate(val, test, labels)
        formula = " + ".join(f"{w[t]:.2f}*z({t})" for t in terms)
        print(f"score = {formula}\nAUROC {m['auroc']:.3f}  AUPRC {m['auprc']:.3f}  "
              f"F1 {m['f1']:.3f} (threshold {m['threshold']:.3g} from validation normals)")
        fig = term_histograms({"combined score": test}, labels)
        plt.show()
        plt.close(fig)
        return m

    sliders = {t: widgets.FloatSlider(value=float(min(max(weights.get(t, 0.0), 0.0), max_weight)),
                                      min=0.0, max=max_weight, step=0.01, description=t,
                                      continuous_update=False) for t in terms}
    return widgets.interactive(show, **sliders)
