"""Thresholds and normalisation fitted on validation normals; metrics on the test set; metrics.json.

Every method's scoring returns a *score table*: a dict from term name (`residual`,
`discrimination`, `l_enc`, `l_con`, `l_adv`, `l_grad`, ...) to a 1-d tensor with one value per
image, plus `score` (higher = more anomalous). Nothing here special-cases a method.

Each method scores three sets: the validation normals (thresholds, standardisation), the
development anomalies (other classes' *training* images; with the validation normals they give
the `dev` figures on which the guidebook's global defaults are chosen) and the test set (the
reported figures).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .runs import Run, atomic_path, write_json

if TYPE_CHECKING:  # torch is imported where scores are (runs.py says why)
    import torch

    from .data import OneClassSplit

ScoreTable = dict[str, "torch.Tensor"]
FALSE_POSITIVE_RATE = 0.05  # the threshold lets through 5% of the validation normals
METRIC_KEYS = ("auroc", "auprc", "f1", "threshold", "dev", "train_seconds", "score_seconds",
               "score_images_per_second", "params")


def _np(values) -> np.ndarray:
    import torch

    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    return np.asarray(values, dtype=np.float64).ravel()


def threshold_from_validation(val_scores, false_positive_rate: float = FALSE_POSITIVE_RATE) -> float:
    """The score above which an image is called anomalous: the (1 - fpr) quantile of the
    validation normals' scores. Uses no test data."""
    val = _np(val_scores)
    if val.size == 0:
        raise ValueError("no validation scores to choose a threshold from; use val_fraction > 0")
    return float(np.quantile(val, 1.0 - false_positive_rate))


@dataclass(frozen=True)
class Standardizer:
    """z-scores with the mean and standard deviation of the validation normals."""

    mean: float
    std: float

    @classmethod
    def fit(cls, val_values) -> Standardizer:
        val = _np(val_values)
        std = float(val.std())
        return cls(float(val.mean()), std if std > 1e-12 else 1.0)

    def __call__(self, values: torch.Tensor) -> torch.Tensor:
        return (values - self.mean) / self.std


def ranking_metrics(scores, labels) -> dict[str, float]:
    """AUROC and AUPRC (anomaly = positive) of scores against 0/1 labels (scikit-learn)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    scores, labels = _np(scores), _np(labels).astype(int)
    if not np.isfinite(scores).all():
        raise ValueError("some scores are NaN or infinite; check the model and its training")
    if len(np.unique(labels)) < 2:
        raise ValueError("the test set holds only one kind of image (all normal or all anomalous); "
                         "AUROC needs both")
    return {"auroc": float(roc_auc_score(labels, scores)),
            "auprc": float(average_precision_score(labels, scores))}


def metrics(test_scores, test_labels, threshold: float) -> dict[str, float]:
    """AUROC and AUPRC (anomaly = positive) and F1 at a given threshold (scikit-learn)."""
    from sklearn.metrics import f1_score

    ranking = ranking_metrics(test_scores, test_labels)
    labels = _np(test_labels).astype(int)
    return ranking | {"f1": float(f1_score(labels, _np(test_scores) > threshold, zero_division=0))}


def dev_metrics(val_scores, dev_scores) -> dict | None:
    """AUROC and AUPRC of the validation normals (0) against the development anomalies (1): the
    figure global defaults are chosen on (also: against any stand-in anomalies). None without
    anomalies."""
    if dev_scores is None or len(dev_scores) == 0:
        return None
    val, dev = _np(val_scores), _np(dev_scores)
    labels = np.r_[np.zeros(len(val)), np.ones(len(dev))]
    return ranking_metrics(np.r_[val, dev], labels) | {"n_normal": len(val),
                                                       "n_anomalous": len(dev)}


def evaluate(val_scores, test_scores, test_labels,
             false_positive_rate: float = FALSE_POSITIVE_RATE) -> dict[str, float]:
    """Threshold from the validation normals, then AUROC/AUPRC/F1 on the test set."""
    threshold = threshold_from_validation(val_scores, false_positive_rate)
    return {**metrics(test_scores, test_labels, threshold), "threshold": threshold}


# ---------------------------------------------------------------------------------------------
# Per-image scores on disk: scores/{method}.npz, read by the plots and the results notebook.


def save_scores(run: Run, method: str, val: ScoreTable, test: ScoreTable, *,
                test_labels: torch.Tensor, test_classes: torch.Tensor,
                test_indices: torch.Tensor, dev: ScoreTable | None = None,
                dev_indices: torch.Tensor | None = None) -> Path:
    """Write every term of the validation, development and test score tables, with labels and
    the test (and, for a sample, development) images they cover, atomically."""
    arrays = {f"val/{k}": _np(v) for k, v in val.items()}
    arrays |= {f"dev/{k}": _np(v) for k, v in (dev or {}).items()}
    arrays |= {f"test/{k}": _np(v) for k, v in test.items()}
    arrays |= {"test_labels": _np(test_labels).astype(np.int64),
               "test_classes": _np(test_classes).astype(np.int64),
               "test_indices": _np(test_indices).astype(np.int64)}
    if dev_indices is not None:
        arrays["dev_indices"] = _np(dev_indices).astype(np.int64)
    path = run.scores / f"{method}.npz"
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
    return path


@dataclass
class SavedScores:
    val: dict[str, np.ndarray]
    dev: dict[str, np.ndarray]  # empty without development anomalies
    test: dict[str, np.ndarray]
    test_labels: np.ndarray
    test_classes: np.ndarray
    test_indices: np.ndarray
    dev_indices: np.ndarray | None = None  # the development images `dev` covers (None: all)


def load_scores(run: Run, method: str) -> SavedScores:
    path = run.scores / f"{method}.npz"
    if not path.is_file():
        raise FileNotFoundError(f"no scores for {method} at {path}; run its notebook with this "
                                f"run_dir first")
    with np.load(path) as data:
        val = {k[4:]: data[k] for k in data.files if k.startswith("val/")}
        dev = {k[4:]: data[k] for k in data.files if k.startswith("dev/")}
        test = {k[5:]: data[k] for k in data.files if k.startswith("test/")}
        return SavedScores(val, dev, test, data["test_labels"], data["test_classes"],
                           data["test_indices"],
                           data["dev_indices"] if "dev_indices" in data.files else None)


# ---------------------------------------------------------------------------------------------
# metrics.json


def read_metrics(run: Run) -> dict:
    if run.metrics_path.is_file():
        return json.loads(run.metrics_path.read_text())
    return {}


def write_split_sizes(run: Run, split: OneClassSplit) -> dict:
    """Start metrics.json for this split; method entries of an earlier, different split go."""
    c = split.counts()
    header = {"dataset": split.dataset, "normal_class": split.normal_class, "seed": split.seed,
              "image_size": split.image_size, "n_train": c["n_train"], "n_val": c["n_val"],
              "n_test": c["n_test"], "n_dev": c["n_dev_anomalous"]}
    old = read_metrics(run)
    same = all(old.get(k) == v for k, v in header.items())
    data = {**header, **{k: old.get(k, {}) if same else {}
                         for k in ("methods", "parameters", "defaults")}}
    write_json(run.metrics_path, data)
    return data


def record_parameters(run: Run, notebook: str, params: dict | None,
                      defaults: dict | None = None) -> None:
    """Record in metrics.json the parameters passed to a notebook and its parameters cell's
    defaults (params None: forget both, as `anogan-guide run` does before running it, so that an
    entry the notebook leaves half-made never carries parameters). Written atomically; without
    a metrics.json there is nothing to describe, and nothing is written."""
    data = read_metrics(run)
    if not data or (params is None and notebook not in data.get("parameters", {})):
        return
    recorded, recorded_defaults = data.setdefault("parameters", {}), data.setdefault("defaults", {})
    if params is None:
        del recorded[notebook]
        recorded_defaults.pop(notebook, None)
    else:
        recorded[notebook] = params
        recorded_defaults[notebook] = defaults or {}
    write_json(run.metrics_path, data)


def record_method(run: Run, method: str, entry: dict, split: OneClassSplit | None = None) -> dict:
    """Add or replace one method's entry in metrics.json (atomically), stamped with when it was
    made (`made`, UTC): what tells a sweep that an ensemble is older than a part made again
    since, in a clone that holds no score files."""
    data = read_metrics(run)
    if not data and split is not None:
        data = write_split_sizes(run, split)
    missing = [k for k in METRIC_KEYS if k not in entry]
    if missing:
        raise ValueError(f"metrics entry for {method} lacks {missing}")
    data.setdefault("methods", {})[method] = {
        **{k: entry[k] for k in METRIC_KEYS},
        "made": datetime.now(UTC).isoformat(timespec="microseconds")}
    write_json(run.metrics_path, data)
    return data


def forget_methods(run: Run, methods: list[str]) -> list[str]:
    """Remove methods' entries from metrics.json (atomically) and their saved scores: a notebook
    that no longer makes them (e.g. 02 with `fast_mappings` off) leaves no entry from an earlier
    execution, made with other parameters, beside its own. Returns the methods removed."""
    data = read_metrics(run)
    gone = [m for m in methods if m in data.get("methods", {})]
    for method in gone:
        del data["methods"][method]
    if gone:
        write_json(run.metrics_path, data)
    for method in methods:
        (run.scores / f"{method}.npz").unlink(missing_ok=True)
    return gone


def finish_method(run: Run, method: str, split: OneClassSplit, val: ScoreTable, test: ScoreTable,
                  *, dev: ScoreTable | None, test_indices: torch.Tensor, train_seconds: float,
                  score_seconds: float, params: dict,
                  dev_indices: torch.Tensor | None = None) -> dict:
    """The last step of every method notebook: save the score tables, threshold on validation,
    metrics on test, the development figures (validation normals vs `dev`, the scores of
    `split.dev`, or of the sample `dev_indices` of it; None when the split has none), and the
    method's entry in metrics.json. `score_seconds` covers every image scored. Returns the
    entry."""
    labels = split.test_labels[test_indices]
    if dev is None and split.has_dev:
        raise ValueError(f"{method}: the split has development anomalies; score split.dev and "
                         f"pass its score table as dev=")
    save_scores(run, method, val, test, test_labels=labels, dev=dev, dev_indices=dev_indices,
                test_classes=split.test_classes[test_indices], test_indices=test_indices)
    result = evaluate(val["score"], test["score"], labels)
    n_scored = len(test["score"]) + len(val["score"]) + (len(dev["score"]) if dev else 0)
    entry = {**result, "dev": dev_metrics(val["score"], dev["score"] if dev else None),
             "train_seconds": round(float(train_seconds), 3),
             "score_seconds": round(float(score_seconds), 3),
             "score_images_per_second": round(n_scored / max(score_seconds, 1e-9), 1),
             "params": params}
    record_method(run, method, entry, split)
    return entry


def metrics_table(data: dict) -> str:
    """A Markdown table of every method in a metrics.json dict."""
    head = (f"{data.get('dataset')} normal_class={data.get('normal_class')} seed={data.get('seed')}"
            f" (n_train={data.get('n_train')}, n_val={data.get('n_val')}, "
            f"n_test={data.get('n_test')})")
    rows = ["| method | AUROC | AUPRC | F1 | dev AUROC | train s | score s | images/s |",
            "|---|---|---|---|---|---|---|---|"]
    for name, m in data.get("methods", {}).items():
        dev = f"{m['dev']['auroc']:.3f}" if m.get("dev") else "–"
        rows.append(f"| {name} | {m['auroc']:.3f} | {m['auprc']:.3f} | {m['f1']:.3f} | {dev} | "
                    f"{m['train_seconds']:.1f} | {m['score_seconds']:.1f} | "
                    f"{m['score_images_per_second']:.0f} |")
    if len(rows) == 2:
        rows.append("| (no method has run yet) | | | | | | | |")
    return head + "\n" + "\n".join(rows)
