"""The GANomaly + GradCon ensemble: the two trained detectors of one run folder, late-fused.

Each detector's saved score (`scores/ganomaly.npz`, `scores/gradcon.npz`) is standardised with
the mean and standard deviation of its own validation normals, and the two z-scores are mixed:

    score = (1 - share) * z(GANomaly) + share * z(GradCon)

Nothing is trained. The validation normals fix the standardisation and the threshold; `share`
is a global default chosen on the development split (`devstudy`, never the test set): GANomaly
says the latent codes disagree, GradCon that the image would pull the decoder an unusual way, and
where the one is unsure the other may not be. The hybrid (hybrid.py) puts both signals into one
network instead; this is the baseline it is measured against.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from .data import OneClassSplit
from .evaluate import SavedScores, Standardizer, dev_metrics, finish_method, load_scores, read_metrics
from .fusion import Combination
from .runs import Run, timed

PARTS = ("ganomaly", "gradcon")
# GradCon's share: the best mean development AUROC pooled over digits, MNIST and CIFAR-10 (JPEG)
# (results/dev-study-ensemble.md); the CPU parameters files carry each data set's own choice
SHARE = 0.6
SHARES = tuple(round(0.1 * i, 1) for i in range(11))  # the candidates the study compares


def load_parts(run: Run) -> dict[str, SavedScores]:
    """Both detectors' saved scores; they must have scored the same test images."""
    parts = {}
    for method in PARTS:
        try:
            parts[method] = load_scores(run, method)
        except FileNotFoundError:
            raise FileNotFoundError(f"the ensemble needs {method}'s scores in {run.scores}; run "
                                    f"03_ganomaly and 04_gradcon with this run_dir first") from None
    first, second = (parts[m] for m in PARTS)
    if not np.array_equal(first.test_indices, second.test_indices) or \
            len(first.dev.get("score", ())) != len(second.dev.get("score", ())):
        raise ValueError(f"{' and '.join(PARTS)} scored different images in {run.root}; run "
                         f"both again on the same split")
    return parts


def combination(val_scores: Mapping[str, torch.Tensor], share: float) -> Combination:
    """The fitted mix: each part standardised on its validation normals, weights (1-share, share)."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share {share} is outside [0, 1]; give GradCon's share of the score, "
                         f"e.g. {SHARE} (GANomaly gets 1 - share)")
    scalers = tuple(Standardizer.fit(val_scores[m]) for m in PARTS)
    return Combination(PARTS, scalers, (1.0 - share, share))


def tables(parts: Mapping[str, SavedScores], share: float
           ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None, dict, Combination]:
    """Validation, development (None without) and test score tables: each part's score and the
    ensemble's `score`."""
    def table(part: str) -> dict[str, torch.Tensor] | None:
        rows = {m: getattr(parts[m], part).get("score") for m in PARTS}
        if any(v is None or len(v) == 0 for v in rows.values()):
            return None
        return {m: torch.as_tensor(v, dtype=torch.float64) for m, v in rows.items()}

    val, dev, test = table("val"), table("dev"), table("test")
    fitted = combination(val, share)
    for t in (val, dev, test):
        if t is not None:
            t["score"] = fitted(t).double()
    return val, dev, test, fitted


def dev_auroc_per_share(val: Mapping[str, torch.Tensor], dev: Mapping[str, torch.Tensor],
                        shares=SHARES) -> dict[float, float]:
    """The development AUROC of the ensemble at each share, from each part's validation-normal
    and development-anomaly scores ({part: scores}; no test image is involved)."""
    val = {m: torch.as_tensor(val[m], dtype=torch.float64) for m in PARTS}
    dev = {m: torch.as_tensor(dev[m], dtype=torch.float64) for m in PARTS}
    out = {}
    for share in shares:
        fitted = combination(val, share)
        out[share] = dev_metrics(fitted(val), fitted(dev))["auroc"]
    return out


def finish(run: Run, split: OneClassSplit, share: float = SHARE) -> dict:
    """Score the ensemble from the run folder's two detectors and record it as method
    `ensemble` (scores/ensemble.npz, metrics.json); its train time is the parts' together."""
    parts = load_parts(run)
    (val, dev, test, fitted), seconds = timed(lambda: tables(parts, share))
    entries = read_metrics(run).get("methods", {})
    return finish_method(
        run, "ensemble", split, val, test, dev=dev,
        test_indices=torch.as_tensor(parts["ganomaly"].test_indices),
        train_seconds=sum(entries.get(m, {}).get("train_seconds", 0.0) for m in PARTS),
        score_seconds=seconds + sum(entries.get(m, {}).get("score_seconds", 0.0) for m in PARTS),
        params={"share": share, "parts": list(PARTS), "combination": fitted.describe()})
