"""Score fusion: several per-image terms combined into one anomaly score, fitted on normals.

Each term is standardised with the mean and standard deviation of the validation normals
(`evaluate.Standardizer`) and the z-scores are combined by a rule fitted on the validation normals
only: `fixed` weights chosen beforehand (the guidebook's default for the hybrid, chosen on the
development split), `equal` weights (the mean z-score), `min_variance` (the non-negative weights, summing to
one, that make the combined validation score most concentrated), `max` (the largest z-score,
i.e. the term most unusual for a normal image), or `pseudo`: of those three rules and each term
alone, the candidate that best separates the validation normals from their `pseudo_anomalies`
(the same images turned and mirrored). No test image or label is involved in any fit. `ablation`
(which reads test labels, after the metrics) compares terms and rules.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .evaluate import Standardizer, dev_metrics

WEIGHTINGS = ("pseudo", "equal", "min_variance", "max", "fixed")
RULES = ("equal", "min_variance", "max")  # the rules `pseudo` chooses from, beside single terms
COMBINATION_PREFIX = "combination/"  # a fitted combination in a checkpoint's `extra`


@dataclass(frozen=True)
class Combination:
    """Weights of standardised terms: score = sum_k w_k (t_k - mean_k) / std_k, with every mean,
    standard deviation and weight taken from the validation normals; with `rule="max"` the
    score is the largest weighted z-score instead of the sum."""

    terms: tuple[str, ...]
    scalers: tuple[Standardizer, ...]
    weights: tuple[float, ...]
    rule: str = "sum"  # sum | max

    def standardized(self, table: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each term as z-scores of the validation normals."""
        return {t: s(table[t].double()).float() for t, s in zip(self.terms, self.scalers,
                                                                 strict=True)}

    def __call__(self, table: Mapping[str, torch.Tensor]) -> torch.Tensor:
        z = self.standardized(table)
        weighted = [w * z[t] for t, w in zip(self.terms, self.weights, strict=True)]
        return torch.stack(weighted).amax(0) if self.rule == "max" else sum(weighted)

    def describe(self) -> str:
        parts = [f"{w:.3f}*z({t})" for t, w in zip(self.terms, self.weights, strict=True)
                 if w or self.rule == "max"]
        return f"max({', '.join(parts)})" if self.rule == "max" else " + ".join(parts)

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """(3, n_terms) float64 tensor for a checkpoint's `extra` (in the order of `terms`)."""
        rows = [[s.mean for s in self.scalers], [s.std for s in self.scalers], list(self.weights)]
        return {COMBINATION_PREFIX + "stats": torch.tensor(rows, dtype=torch.float64),
                COMBINATION_PREFIX + "max": torch.tensor(float(self.rule == "max"))}

    @classmethod
    def from_tensors(cls, extra: Mapping[str, torch.Tensor], terms: Sequence[str]
                     ) -> Combination | None:
        stats = extra.get(COMBINATION_PREFIX + "stats")
        if stats is None or not torch.isfinite(stats).all():
            return None
        mean, std, weights = stats.tolist()
        rule = "max" if float(extra.get(COMBINATION_PREFIX + "max", 0.0)) else "sum"
        return cls(tuple(terms), tuple(Standardizer(m, s) for m, s in zip(mean, std, strict=True)),
                   tuple(weights), rule)


def min_variance_weights(z: np.ndarray, ridge: float = 1e-3) -> np.ndarray:
    """Non-negative weights summing to one that minimise the variance of z @ w (z: (N, K)
    standardised validation terms). Exact for small K: the unconstrained optimum
    C_S^-1 1 / (1' C_S^-1 1) on every subset S of terms, the best one that is non-negative."""
    k = z.shape[1]
    cov = np.cov(z, rowvar=False).reshape(k, k) + ridge * np.eye(k)
    best, best_var = np.full(k, 1.0 / k), np.inf
    for size in range(1, k + 1):
        for subset in itertools.combinations(range(k), size):
            idx = list(subset)
            w_s = np.linalg.solve(cov[np.ix_(idx, idx)], np.ones(size))
            if w_s.sum() <= 0:
                continue
            w_s = w_s / w_s.sum()
            if (w_s < 0).any():
                continue
            w = np.zeros(k)
            w[idx] = w_s
            var = float(w @ cov @ w)
            if var < best_var - 1e-12:
                best, best_var = w, var
    return best


def pseudo_anomalies(images: torch.Tensor) -> torch.Tensor:
    """Stand-ins for anomalies made from normal images alone: each image turned by 90, 180 and
    270 degrees and mirrored left-right and upside-down. They keep the normal class's strokes,
    textures and intensities but not its shape, as images of another class do. Deterministic."""
    if images.dim() != 4 or images.shape[-1] != images.shape[-2]:
        raise ValueError(f"pseudo_anomalies needs square images (N, C, H, H), got "
                         f"{tuple(images.shape)}")
    return torch.cat([torch.rot90(images, k, (2, 3)) for k in (1, 2, 3)]
                     + [images.flip(3), images.flip(2)])


def separation(values_normal: torch.Tensor, values_pseudo: torch.Tensor) -> float:
    """AUROC of a score separating validation normals (0) from their pseudo-anomalies (1), as
    the development figure separates them from other classes' images."""
    return dev_metrics(values_normal, values_pseudo)["auroc"]


def candidate_combinations(val_table: Mapping[str, torch.Tensor], terms: Sequence[str]
                           ) -> dict[str, Combination]:
    """What `weighting="pseudo"` chooses from: each term alone, then the rules in RULES, all
    fitted on the validation normals."""
    scalers = tuple(Standardizer.fit(val_table[t]) for t in terms)
    single = {f"{t} alone": Combination(tuple(terms), scalers, tuple(float(u == t) for u in terms))
              for t in terms}
    return single | {rule: fit_combination(val_table, terms, rule) for rule in RULES}


def fit_combination(val_table: Mapping[str, torch.Tensor], terms: Sequence[str],
                    weighting: str = "pseudo",
                    pseudo_table: Mapping[str, torch.Tensor] | None = None,
                    weights: Sequence[float] | None = None) -> Combination:
    """Standardise `terms` with the validation normals' statistics and weight them (see the
    module docstring). `val_table` must hold validation normals only; `weighting="pseudo"`
    also needs `pseudo_table`, the terms of their `pseudo_anomalies`, and returns the candidate
    (`candidate_combinations`) that separates the two best (ties: the earlier candidate);
    `weighting="fixed"` takes `weights`, one per term, chosen beforehand (e.g. on the
    development split: never per run)."""
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting={weighting!r} is unknown; use one of {', '.join(WEIGHTINGS)}")
    missing = [t for t in terms if t not in val_table]
    if missing:
        raise ValueError(f"the validation table lacks {missing}; score every term first")
    if weighting == "fixed":
        if weights is None or len(weights) != len(terms):
            raise ValueError(f"weighting='fixed' needs one weight per term ({', '.join(terms)}), "
                             f"got {list(weights or [])}")
        scalers = tuple(Standardizer.fit(val_table[t]) for t in terms)
        return Combination(tuple(terms), scalers, tuple(float(w) for w in weights))
    if weighting == "pseudo":
        if pseudo_table is None:
            raise ValueError("weighting='pseudo' needs pseudo_table: the terms of "
                             "hybrid.pseudo_anomalies(validation images), scored like them")
        candidates = candidate_combinations(val_table, terms)
        auc = {name: separation(c(val_table), c(pseudo_table)) for name, c in candidates.items()}
        return candidates[max(auc, key=auc.get)]  # max keeps the first of equal values
    scalers = tuple(Standardizer.fit(val_table[t]) for t in terms)
    z = np.stack([s(val_table[t].double()).numpy() for t, s in zip(terms, scalers, strict=True)],
                 1)
    if weighting == "max":  # each term counts in validation standard deviations
        return Combination(tuple(terms), scalers, (1.0,) * len(terms), "max")
    if weighting == "equal" or len(z) < 3:
        weights = np.full(len(terms), 1.0 / len(terms))
    else:
        weights = min_variance_weights(z)
    return Combination(tuple(terms), scalers, tuple(float(w) for w in weights))


# ---------------------------------------------------------------------------------------------
# Analysis (after the metrics: reads test labels)


def ablation(val_table: Mapping[str, torch.Tensor], test_table: Mapping[str, torch.Tensor],
             test_labels,
             candidates: Mapping[str, tuple[Sequence[str], str | None, Sequence[float] | None]], *,
             dev_table: Mapping[str, torch.Tensor] | None = None,
             pseudo_table: Mapping[str, torch.Tensor] | None = None) -> list[dict]:
    """Development and test AUROC of candidate scores, each fitted on the validation normals:
    `candidates` maps a name to (terms, weighting, fixed weights or None), weighting None for a
    single term alone.
    `pseudo` candidates need `pseudo_table` (left out without one); the development AUROC
    (validation normals vs `dev_table`) only with a `dev_table`. Rows {"score", "weights",
    "dev_auroc", "auroc"}."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(test_labels).astype(int)
    rows = []
    for name, (terms, weighting, weights) in candidates.items():
        if weighting == "pseudo" and pseudo_table is None:
            continue
        comb = None if weighting is None else fit_combination(val_table, terms, weighting,
                                                              pseudo_table, weights)
        scores = (lambda t: t[terms[0]]) if comb is None else comb  # noqa: B023 (used at once)
        dev = dev_metrics(scores(val_table), scores(dev_table)) if dev_table else None
        rows.append({"score": name, "weights": comb.describe() if comb else "",
                     "dev_auroc": dev["auroc"] if dev else None,
                     "auroc": float(roc_auc_score(labels, scores(test_table).double().numpy()))})
    return rows


def ablation_markdown(rows: Sequence[Mapping]) -> str:
    """The ablation as a Markdown table."""
    lines = ["| score | weights (fitted on validation normals) | dev AUROC | test AUROC |",
             "|---|---|---|---|"]
    lines += [f"| {r['score']} | {r['weights']} | "
              f"{'–' if r['dev_auroc'] is None else format(r['dev_auroc'], '.4f')} | "
              f"{r['auroc']:.4f} |" for r in rows]
    return "\n".join(lines)
