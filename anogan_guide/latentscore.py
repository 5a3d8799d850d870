"""The score column of AnoGAN's and f-AnoGAN's score tables, chosen among the latent mapping's
terms: the mapping score itself (`anogan`, (1 - lam) residual + lam discrimination: the published
score and the default), its two parts, and with the discriminator's rotation head (`rothead`,
`anogan.AnoganConfig(w_rot=1)`) the head's per-image `l_rot`.

    rule = ScoreRule.fit(val_map.table(), "anogan,l_rot", "1,2")    # validation normals only
    test_table = test_map.table(rule)                               # score = z(anogan) + 2 z(l_rot)
    params |= rule.params()                                         # metrics.json; the detector
    rule = ScoreRule.from_params(params)                            # rebuilds it from there

Several terms are each standardised with the validation normals' mean and standard deviation and
summed with weights fixed beforehand (`fusion.fit_combination`, weighting `fixed`), as GANomaly's
`score_terms` / `score_weights` combine its terms; one term alone is the score as it is. No test
image is read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from . import scorerule
from .fusion import Combination, fit_combination
from .latent import PUBLISHED

SCORE_TERMS = (PUBLISHED, "residual", "discrimination", "l_rot")  # what the score may combine


@dataclass(frozen=True)
class ScoreRule:
    """The score column of an AnoGAN or f-AnoGAN table: one term as it is (`anogan`, the mapping
    score, is the published score) or several, z-scored with the validation normals' statistics
    and summed with fixed weights (`fusion.Combination`). Fitted on the validation normals
    (notebook 02), recorded with the method's parameters (`params`), rebuilt by the detector."""

    terms: tuple[str, ...] = (PUBLISHED,)
    combination: Combination | None = None  # several terms
    weights: str = "1"  # as given, for the record

    @classmethod
    def fit(cls, val_table: Mapping[str, torch.Tensor], score_terms: str = PUBLISHED,
            score_weights: str = "1") -> ScoreRule:
        """The rule of `score_terms` (comma-separated, of SCORE_TERMS) with one fixed weight per
        term (`score_weights`), fitted on the validation normals' table only."""
        scorerule.check(score_terms, "fixed", score_weights, SCORE_TERMS)
        terms = scorerule.parse_terms(score_terms)
        table = _with_published(val_table)
        if "l_rot" in terms and "l_rot" not in table:
            raise ValueError("score_terms has l_rot, the rotation head's loss, but this GAN's "
                             "discriminator has no head; train it with -p w_rot 1 (notebook 01)")
        if len(terms) == 1:
            return cls(terms, None, score_weights)
        weights = scorerule.parse_weights(score_weights)
        return cls(terms, fit_combination(table, terms, "fixed", weights=weights), score_weights)

    def __call__(self, table: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The table with the rule's score column (the published rule leaves it as it is)."""
        if self.terms == (PUBLISHED,):
            return dict(table)
        full = _with_published(table)
        missing = [t for t in self.terms if t not in full]
        if missing:
            raise ValueError(f"the score table lacks {', '.join(missing)} for the score "
                             f"{self.describe()}; score it with the GAN the rule was fitted for")
        score = full[self.terms[0]].clone() if self.combination is None else self.combination(full)
        return {**full, "score": score}

    def describe(self) -> str:
        return self.combination.describe() if self.combination else self.terms[0]

    def params(self) -> dict:
        """For the method's parameters in metrics.json: nothing for the published score (as runs
        recorded before rules existed), else terms, weights and the fit (JSON keeps float64)."""
        if self.terms == (PUBLISHED,):
            return {}
        out = {"score_terms": ",".join(self.terms), "score_weights": self.weights,
               "combination": self.describe()}
        if self.combination is not None:
            out["score_fit"] = {k: v.tolist() for k, v in self.combination.to_tensors().items()}
        return out

    @classmethod
    def from_params(cls, params: Mapping) -> ScoreRule:
        """The rule a method's recorded parameters describe (none recorded: the published one)."""
        terms = scorerule.parse_terms(params.get("score_terms", PUBLISHED))
        weights = str(params.get("score_weights", "1"))
        if len(terms) == 1:
            return cls(terms, None, weights)
        fit = {k: torch.tensor(v, dtype=torch.float64) for k, v in params["score_fit"].items()}
        return cls(terms, Combination.from_tensors(fit, terms), weights)


def _with_published(table: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The table with the term "anogan" (a table made without the head has it as its score)."""
    return {**table, PUBLISHED: table.get(PUBLISHED, table["score"])}
