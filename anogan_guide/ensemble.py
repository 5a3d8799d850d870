"""The ensemble: trained detectors of one run folder, late-fused (GANomaly + GradCon by default).

Each part's saved score (`scores/<method>.npz`) is standardised with the mean and standard
deviation of its own validation normals, and the z-scores are mixed with fixed weights:

    score = (1 - share) * z(GANomaly) + share * z(GradCon)          (the default pair)
    score = sum_k w_k z(part_k)                                     (any parts, e.g. rotnet,gradcon)

Nothing is trained. The validation normals fix the standardisation and the threshold; `share`
(or the weights) is a default chosen on the development split (`devstudy`, never the test set):
GANomaly says the latent codes disagree, GradCon that the image would pull the decoder an
unusual way, RotNet that the image does not look upright, and where one is unsure another may
not be. The hybrid (hybrid.py) puts two of those signals into one network instead; this is the
baseline it is measured against.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from .data import OneClassSplit
from .evaluate import SavedScores, Standardizer, dev_metrics, finish_method, load_scores, read_metrics
from .fusion import Combination
from .runs import Run, timed
from .scorerule import parse_terms

DEFAULT_PARTS = ("ganomaly", "gradcon")
# the second part's share (GradCon's in the default pair): the best mean development AUROC pooled
# over digits, MNIST and CIFAR-10 (JPEG) (results/dev-study-ensemble.md); the CPU parameters files
# carry each data set's own choice
SHARE = 0.6
SHARES = tuple(round(0.1 * i, 1) for i in range(11))  # the candidates the study compares


def parse_parts(text: str | Sequence[str]) -> tuple[str, ...]:
    """'rotnet,gradcon' (or a sequence) as the methods to mix, in order; at least two, no repeats."""
    parts = tuple(dict.fromkeys(parse_terms(text) if isinstance(text, str) else text))
    if len(parts) < 2:
        raise ValueError(f"the ensemble mixes at least two methods; got parts {text!r}: give e.g. "
                         f"parts ganomaly,gradcon")
    return parts


def mix_weights(parts: Sequence[str], share: float, weights: Sequence[float] | None = None
                ) -> tuple[float, ...]:
    """The weight of each part: (1 - share, share) for two parts, else `weights` (one per part,
    not negative), normalised to sum to one."""
    if weights is None or len(weights) == 0:
        if len(parts) != 2:
            raise ValueError(f"{len(parts)} parts ({', '.join(parts)}) need one weight each: give "
                             f"weights, e.g. {','.join(['1'] * len(parts))}")
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"share {share} is outside [0, 1]; give the second part's share of the "
                             f"score, e.g. {SHARE} (the first part gets 1 - share)")
        return (1.0 - share, share)
    weights = tuple(float(w) for w in weights)
    if len(weights) != len(parts) or min(weights) < 0 or sum(weights) <= 0:
        raise ValueError(f"weights {list(weights)} do not fit parts {', '.join(parts)}: give one "
                         f"weight per part, none negative, not all zero")
    return tuple(w / sum(weights) for w in weights)


def load_parts(run: Run, parts: Sequence[str] = DEFAULT_PARTS) -> dict[str, SavedScores]:
    """The parts' saved scores; they must have scored the same test images."""
    loaded = {}
    for method in parts:
        try:
            loaded[method] = load_scores(run, method)
        except FileNotFoundError:
            present = sorted(p.stem for p in run.scores.glob("*.npz") if p.stem != "ensemble")
            raise FileNotFoundError(
                f"the ensemble needs {method}'s scores in {run.scores}; run {method}'s notebook "
                f"with this run_dir first, or mix methods it has ({', '.join(present) or 'none'})"
            ) from None
    first = loaded[parts[0]]
    for method in parts[1:]:
        other = loaded[method]
        if not np.array_equal(first.test_indices, other.test_indices) or \
                len(first.dev.get("score", ())) != len(other.dev.get("score", ())):
            raise ValueError(f"{parts[0]} and {method} scored different images in {run.root}; run "
                             f"both again on the same split")
    return loaded


def combination(val_scores: Mapping[str, torch.Tensor], share: float = SHARE,
                weights: Sequence[float] | None = None) -> Combination:
    """The fitted mix of the parts (the keys of `val_scores`, in order): each standardised on
    its validation normals, weighted by `mix_weights`."""
    parts = tuple(val_scores)
    scalers = tuple(Standardizer.fit(val_scores[m]) for m in parts)
    return Combination(parts, scalers, mix_weights(parts, share, weights))


def tables(parts: Mapping[str, SavedScores], share: float, weights: Sequence[float] | None = None
           ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None, dict, Combination]:
    """Validation, development (None without) and test score tables: each part's score and the
    ensemble's `score`."""
    def table(part: str) -> dict[str, torch.Tensor] | None:
        rows = {m: getattr(parts[m], part).get("score") for m in parts}
        if any(v is None or len(v) == 0 for v in rows.values()):
            return None
        return {m: torch.as_tensor(v, dtype=torch.float64) for m, v in rows.items()}

    val, dev, test = table("val"), table("dev"), table("test")
    fitted = combination(val, share, weights)
    for t in (val, dev, test):
        if t is not None:
            t["score"] = fitted(t).double()
    return val, dev, test, fitted


def dev_auroc_per_share(val: Mapping[str, torch.Tensor], dev: Mapping[str, torch.Tensor],
                        shares=SHARES) -> dict[float, float]:
    """The development AUROC of a two-part mix at each share of the second part, from each
    part's validation-normal and development-anomaly scores ({part: scores}, in order; no test
    image is involved)."""
    val = {m: torch.as_tensor(v, dtype=torch.float64) for m, v in val.items()}
    dev = {m: torch.as_tensor(dev[m], dtype=torch.float64) for m in val}
    out = {}
    for share in shares:
        fitted = combination(val, share)
        out[share] = dev_metrics(fitted(val), fitted(dev))["auroc"]
    return out


def finish(run: Run, split: OneClassSplit, share: float = SHARE,
           parts: Sequence[str] = DEFAULT_PARTS, weights: Sequence[float] | None = None) -> dict:
    """Score the ensemble from the run folder's detectors and record it as method `ensemble`
    (scores/ensemble.npz, metrics.json); its train time is the parts' together."""
    parts = parse_parts(parts)
    mix_weights(parts, share, weights)  # bad weights are said before anything is read
    loaded = load_parts(run, parts)
    (val, dev, test, fitted), seconds = timed(lambda: tables(loaded, share, weights))
    entries = read_metrics(run).get("methods", {})
    return finish_method(
        run, "ensemble", split, val, test, dev=dev,
        test_indices=torch.as_tensor(loaded[parts[0]].test_indices),
        train_seconds=sum(entries.get(m, {}).get("train_seconds", 0.0) for m in parts),
        score_seconds=seconds + sum(entries.get(m, {}).get("score_seconds", 0.0) for m in parts),
        params={"share": share, "parts": list(parts), "weights": list(fitted.weights),
                "combination": fitted.describe()})
