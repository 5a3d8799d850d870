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

Which images a method's entry covers (`entry_tables`): the search costs `iterations` passes per
image, so notebook 02 maps a seeded sample of the test and development images (`MappingImages`,
`max_test_images`). A rule of the head's terms alone (`l_rot`) reads no mapping: one forward pass
of the discriminator scores every test and development image, and the entry covers them all; the
search then maps only a small sample, for the figures (`MappingImages.for_score`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import torch

from . import latent, scorerule
from .data import OneClassSplit, stratified_sample, subsample_test
from .fusion import Combination, fit_combination
from .latent import PUBLISHED

SCORE_TERMS = (PUBLISHED, "residual", "discrimination", "l_rot")  # what the score may combine
HEAD_TERMS = ("l_rot",)  # the terms one forward pass of the discriminator gives: no search


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

    @property
    def needs_mapping(self) -> bool:
        """Whether the score reads the latent mapping (False: the rotation head's terms alone)."""
        return reads_mapping(self.terms)

    def on_head(self, head: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The score table of the rotation head's terms alone (`latent.head_terms`), for a rule
        that needs no mapping."""
        if self.needs_mapping:
            raise ValueError(f"the score {self.describe()} reads the latent mapping; map the "
                             f"images first (latent.map_images) and use rule(map.table())")
        if not head:
            raise ValueError(f"the score {self.describe()} needs the rotation head, but this "
                             f"GAN's discriminator has none; train it with -p w_rot 1 (notebook 01)")
        score = head[self.terms[0]].clone() if self.combination is None else self.combination(head)
        return {**head, "score": score}

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


def reads_mapping(terms: Sequence[str]) -> bool:
    """Whether a score of these terms reads the latent mapping (False: the rotation head's terms
    alone, one forward pass of the discriminator)."""
    return any(term not in HEAD_TERMS for term in terms)


@dataclass(frozen=True)
class MappingImages:
    """The images notebook 02 scores, in [-1, 1]: the validation normals, the whole test set and
    development set, and the seeded samples of them the search maps (the test and development
    samples class-stratified)."""

    val: torch.Tensor
    test: torch.Tensor
    test_indices: torch.Tensor  # the search's test sample
    dev: torch.Tensor | None  # None: the split has no development anomalies
    dev_indices: torch.Tensor | None
    val_indices: torch.Tensor | None = None  # the search's validation normals (None: all)
    figures_only: bool = False  # the score reads no mapping: the samples only serve the figures

    @classmethod
    def of(cls, split: OneClassSplit, max_test_images: int = 0, seed: int = 0) -> MappingImages:
        """The split's images with samples of `max_test_images` each (0: every image)."""
        dev = split.dev.in_range(*latent.VALUE_RANGE).tensors() if split.has_dev else None
        return cls(split.val.in_range(*latent.VALUE_RANGE).tensors(),
                   split.test.in_range(*latent.VALUE_RANGE).tensors(),
                   subsample_test(split, max_test_images, seed=seed), dev,
                   stratified_sample(split.dev_classes, max_test_images, seed=seed)
                   if split.has_dev else None)

    @classmethod
    def for_score(cls, split: OneClassSplit, score_terms: str, max_test_images: int = 0,
                  figure_images: int = 0, seed: int = 0) -> MappingImages:
        """The images for a score of `score_terms`. A score that reads the mapping: the search's
        samples of `max_test_images` (`of`) and every validation normal, whose mapped scores set
        the threshold. One of the head's terms alone reads no mapping (`entry_tables` scores every
        image with the head), so the search only serves the notebook's figures: it maps at most
        `figure_images` test images (a stratified sample) and as many validation normals (the
        first of the seeded hold-out); 0 keeps the samples of `max_test_images`."""
        if reads_mapping(scorerule.parse_terms(score_terms)) or figure_images <= 0:
            return cls.of(split, max_test_images, seed)
        n = figure_images if max_test_images <= 0 else min(max_test_images, figure_images)
        images = cls.of(split, n, seed)
        return replace(images, val_indices=torch.arange(min(n, len(images.val))),
                       figures_only=True)

    @property
    def val_sample(self) -> torch.Tensor:
        return self.val if self.val_indices is None else self.val[self.val_indices]

    def whole(self) -> MappingImages:
        """The same images with every one in the samples (a mapping cheap enough for all)."""
        every = None if self.dev is None else torch.arange(len(self.dev))
        return replace(self, test_indices=torch.arange(len(self.test)), dev_indices=every)

    def for_encoder(self) -> MappingImages:
        """The images f-AnoGAN's encoder maps: all of them (`whole`, one forward pass each), or,
        when the score reads no mapping (`figures_only`), the search's samples again: the maps
        then serve only the figures and the comparison of the mappings."""
        return self if self.figures_only else self.whole()

    @property
    def test_sample(self) -> torch.Tensor:
        return self.test[self.test_indices]

    @property
    def dev_sample(self) -> torch.Tensor | None:
        return None if self.dev is None else self.dev[self.dev_indices]


@dataclass(frozen=True)
class EntryTables:
    """A method's validation, test and development score tables for `evaluate.finish_method`,
    the test images its test table covers, and the seconds scoring took."""

    val: dict[str, torch.Tensor]
    test: dict[str, torch.Tensor]
    dev: dict[str, torch.Tensor] | None
    test_indices: torch.Tensor
    seconds: float
    dev_indices: torch.Tensor | None = None  # the development sample `dev` covers (None: all)
    # a rule of the head's terms alone: the head's raw terms of images.val, .test and .dev, which
    # another entry of the same GAN reuses (`entry_tables(same_head=...)`)
    head: tuple[dict[str, torch.Tensor] | None, ...] | None = None


def entry_tables(rule: ScoreRule, model, images: MappingImages, val_map: latent.LatentMap,
                 test_map: latent.LatentMap, map_seconds: float,
                 same_head: EntryTables | None = None, **mapping) -> EntryTables:
    """The tables of a method's entry. A rule that reads the mapping scores the maps already made
    (`val_map` of images.val, `test_map` of images.test_sample, in `map_seconds`) and maps the
    development sample with `mapping` (`latent.map_images`' keywords); a rule of the head's terms
    alone needs no search and scores every test and development image with one forward pass of
    the discriminator (the maps then only serve the notebook's figures). `same_head`: an entry of
    the same GAN on the same images whose head terms are reused, with the seconds they took (the
    f-AnoGAN entries of notebook 02: the encoder does not enter the head's terms)."""
    start = time.perf_counter()
    if rule.needs_mapping:
        dev_images = images.dev_sample
        dev = None if dev_images is None else latent.map_images(model, dev_images,
                                                               **mapping).table(rule)
        return EntryTables(val_map.table(rule), test_map.table(rule), dev, images.test_indices,
                           map_seconds + time.perf_counter() - start,
                           None if dev is None else images.dev_indices)
    if same_head is not None and same_head.head is not None:
        if len(same_head.test_indices) != len(images.test):
            raise ValueError("same_head is an entry of other images; pass the entry made with "
                             "these MappingImages, or none")
        head, start = same_head.head, start - same_head.seconds
    else:
        gan = getattr(model, "gan", model)  # an f-AnoGAN encoder's GAN, or the GAN itself
        batch_size = mapping.get("batch_size", 256)
        head = tuple(None if x is None else latent.head_terms(gan, x, batch_size)
                     for x in (images.val, images.test, images.dev))
    val, test, dev = (None if terms is None else rule.on_head(terms) for terms in head)
    return EntryTables(val, test, dev, torch.arange(len(images.test)),
                       time.perf_counter() - start, head=head)
