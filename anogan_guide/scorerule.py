"""The score of a GAN-family method (GANomaly, the hybrid) from its per-image terms.

A config names the terms (`score_terms`, comma-separated), how their z-scores combine
(`weighting`, see `fusion.py`) and, for `weighting="fixed"`, one weight per term
(`score_weights`). Each term is standardised with the validation normals' mean and standard
deviation and the z-scores combined (`fusion.fit_combination`), fitted after every epoch on that
epoch's validation scores and saved in the checkpoint's `extra` (`COMBINATION_PREFIX`). Nothing
here reads a test image.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .fusion import COMBINATION_PREFIX, WEIGHTINGS, Combination

ScoreTable = dict[str, torch.Tensor]


def parse_terms(score_terms: str) -> tuple[str, ...]:
    """"l_enc, l_rot" -> ("l_enc", "l_rot")."""
    return tuple(t.strip() for t in score_terms.split(",") if t.strip())


def parse_weights(score_weights: str) -> tuple[float, ...] | None:
    """"1,0.25" -> (1.0, 0.25); empty -> None; a single number as `-p score_weights 1` passes it
    (an int or float) -> (1.0,)."""
    if isinstance(score_weights, (int, float)):
        return (float(score_weights),)
    return tuple(float(w) for w in score_weights.split(",")) if score_weights else None


def check(score_terms: str, weighting: str, score_weights: str, allowed: Sequence[str]) -> None:
    """One clear line for a score that cannot be built: unknown terms or weighting, or fixed
    weights that do not match the terms."""
    terms = parse_terms(score_terms)
    unknown = [t for t in terms if t not in allowed]
    if unknown or not terms:
        raise ValueError(f"score_terms={score_terms!r}: use a comma-separated list of "
                         f"{', '.join(allowed)}")
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting={weighting!r} is unknown; use one of {', '.join(WEIGHTINGS)}")
    try:
        fixed = parse_weights(score_weights)
    except ValueError:
        fixed = ()
    if weighting == "fixed" and (not fixed or len(fixed) != len(terms)):
        raise ValueError(f"weighting=fixed needs score_weights with one number per score term "
                         f"({score_terms}), e.g. -p score_weights 1,0.25; got {score_weights!r}")


def extra(n_terms: int, combination: Combination | None) -> dict[str, torch.Tensor]:
    """A checkpoint's `extra` entries of a combination; NaN placeholders before the first fit."""
    if combination is not None:
        return combination.to_tensors()
    return {COMBINATION_PREFIX + "stats": torch.full((3, n_terms), float("nan"),
                                                     dtype=torch.float64),
            COMBINATION_PREFIX + "max": torch.tensor(0.0)}


def column(table: ScoreTable, combination: Combination | None, fallback: str = "l_enc"
           ) -> torch.Tensor:
    """The `score` column of a table: the combination of its terms, or (none fitted) the
    `fallback` term as it is."""
    return combination(table) if combination is not None else table[fallback].clone()
