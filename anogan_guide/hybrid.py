"""The GANomaly-GradCon hybrid ("GAN-Grad"): GANomaly trained with GradCon's gradient constraint.

Networks and losses are GANomaly's (`ganomaly.py`): encoder E1 -> decoder -> encoder E2 and a
DCGAN discriminator, L_G = w_adv L_adv + w_con L_con + w_enc L_enc. To that the hybrid adds
GradCon's gradient term (`gradcon.py`, scored by `gradscore.py`) on the decoder's transposed-conv weights W:

    L_grad = -mean_W cos(dMSE/dW, ref_W),      L = L_G + beta * L_grad      (beta ~ 0.03)

with dMSE/dW taken with `create_graph=True`, so L_grad trains the weights (the public hybrid adds
it as a plain number, `.item()`, which changes nothing). The gradient is that of GradCon's MSE
reconstruction loss x vs x_hat (smooth, where the L1 of L_con would give a sign pattern);
ref_W is its running average over the training steps, saved in the checkpoint (`extra`).

Scoring keeps every term per image: l_enc, l_con, l_adv (GANomaly's batched eval-mode pass),
l_grad with each decoder layer's cosine and mse (GradCon's exact batched per-sample machinery
applied to the generator's reconstruction path E1 -> decoder), and `gradcon` (GradCon's score
from those two), and with `w_rot > 0` GANomaly's rotation head (SS-GAN, `rothead.py`: trained
on the four turns of the normal images beside D's real/fake output) and its per-image term
`l_rot`. The final score combines terms standardised with the validation normals'
statistics (`fusion`): by default z(l_enc) + 0.25 z(l_grad) (`weighting="fixed"`), the rule
chosen on the development split among the candidates of `candidate_scores` (docs/defaults.md, "How the
defaults were chosen"); the other weightings fit their weights on the validation normals of the
run. No test image or label is involved.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import ganomaly, gradcon, gradscore, rothead, scorerule
from .data import OneClassSplit, image_batches
from .fusion import WEIGHTINGS, Combination, fit_combination, pseudo_anomalies
from .ganomaly import GanomalyConfig, TrainedGanomaly
from .nets import GanomalyDiscriminator, GanomalyGenerator, eval_mode
from .runs import Run
from .training import Cycled, TrainingLoop

METHOD = "hybrid"
VALUE_RANGE = ganomaly.VALUE_RANGE  # the tanh decoder: images in [-1, 1]
TERMS = ("l_enc", "l_con", "l_adv", "l_grad")  # the training losses, each also a per-image term
# what a score may combine: the training losses, GradCon's reconstruction term `mse`,
# `gradcon` = mse + grad_weight * l_grad, GradCon's own score on the hybrid's reconstruction
# path, and (with w_rot > 0) the rotation head's l_rot
SCORE_TERMS = (*TERMS, "mse", "gradcon", "l_rot")
FIXED_GRAD_RATIOS = (0.1, 0.25, 0.5, 2.0, 4.0)  # z(l_enc) + r * z(term) candidates (1: equal)
TERM_SETS = {"GANomaly terms": ("l_enc", "l_con", "l_adv"), "l_enc + l_grad": ("l_enc", "l_grad"),
             "l_enc + mse + l_grad": ("l_enc", "mse", "l_grad"), "all four terms": TERMS,
             "l_enc + gradcon": ("l_enc", "gradcon"),
             "all five terms": (*TERMS, "mse")}
ScoreTable = dict[str, torch.Tensor]


def candidate_scores(with_pseudo: bool = True, rotation: bool = False
                     ) -> dict[str, tuple[tuple[str, ...], str | None, tuple[float, ...] | None]]:
    """The scores the hybrid's ablation and the development study compare, as (terms, weighting,
    fixed weights): each term alone (weighting None), every weighting of `fusion` fitted on the
    validation normals over each of TERM_SETS, and fixed weights of l_enc and l_grad or gradcon;
    with `rotation` (a model with the rotation head) also l_rot alone and beside those terms."""
    weightings = [w for w in WEIGHTINGS if w != "fixed" and (with_pseudo or w != "pseudo")]
    sets = TERM_SETS | ({f"{name} + l_rot": (*terms, "l_rot") for name, terms in TERM_SETS.items()}
                        if rotation else {})
    single = {f"{t} alone": ((t,), None, None) for t in SCORE_TERMS if rotation or t != "l_rot"}
    fitted = {f"{name} ({w})": (terms, w, None) for name, terms in sets.items()
              for w in weightings}
    partners = ("l_grad", "gradcon", "l_rot") if rotation else ("l_grad", "gradcon")
    fixed = {f"l_enc + {r:g} {t} (fixed)": (("l_enc", t), "fixed", (1.0, r))
             for t in partners for r in FIXED_GRAD_RATIOS}
    return single | fitted | fixed


@dataclass
class HybridConfig(GanomalyConfig):
    """GANomaly's parameters plus the gradient term's weight and the score combination."""

    beta: float = 0.03  # weight of the differentiable gradient loss L_grad in training
    grad_weight: float = gradscore.GRAD_WEIGHT  # the `gradcon` term: mse + grad_weight * l_grad
    # the score: z(l_enc) + 0.25 z(l_grad), chosen on the development split (docs/defaults.md)
    weighting: str = "fixed"  # how the z-scored terms combine: fixed | pseudo | equal | min_variance | max
    score_terms: str = "l_enc,l_grad"  # the terms the score combines (of SCORE_TERMS)
    score_weights: str = "1,0.25"  # weighting=fixed: one weight per score term
    reference_loss: str = "mse"  # the reference averages W's gradient of: mse | generator (L_G)
    score_batch_size: int = 256  # images per batched scoring pass

    SCORE_TERMS: ClassVar[tuple[str, ...]] = SCORE_TERMS
    LATER_KEYS: ClassVar[tuple[str, ...]] = ganomaly.ROTATION_KEYS  # (the score's keys are older)

    def __post_init__(self) -> None:
        super().__post_init__()  # the score's terms, weighting and weights; the rotation weights
        if self.reference_loss not in ("mse", "generator"):
            raise ValueError(f"reference_loss={self.reference_loss!r} is unknown; use mse or "
                             f"generator")
        if self.score_batch_size < 1:
            raise ValueError(f"score_batch_size must be at least 1 (got {self.score_batch_size})")


# ---------------------------------------------------------------------------------------------
# The trained model


@dataclass
class TrainedHybrid(TrainedGanomaly):
    """GANomaly's trained networks plus the reference gradients and the fitted combination."""

    reference: dict[str, torch.Tensor] = field(default_factory=dict)  # decoder weight -> ref
    combination: Combination | None = None  # fitted on this epoch's validation normals


class Reconstructor(nn.Module):
    """The generator's reconstruction path x -> E1 -> decoder -> x_hat, sharing its modules, so
    parameter names ("decoder.net.0.weight", ...) are the generator's. GradCon's per-sample
    gradient machinery scores it like an autoencoder."""

    def __init__(self, generator: GanomalyGenerator) -> None:
        super().__init__()
        self.encoder1, self.decoder = generator.encoder1, generator.decoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder1(x))


def gradient_layers(generator: GanomalyGenerator) -> list[str]:
    """Names (as in named_parameters) of the decoder's transposed-conv weights."""
    return [f"decoder.net.{i}.weight" for i, m in enumerate(generator.decoder.net)
            if isinstance(m, nn.ConvTranspose2d)]


# ---------------------------------------------------------------------------------------------
# Training


def hybrid_step(g: GanomalyGenerator, d: GanomalyDiscriminator, opt_g: torch.optim.Optimizer,
                opt_d: torch.optim.Optimizer, x: torch.Tensor, reference: dict[str, torch.Tensor],
                steps: torch.Tensor, config: HybridConfig, flips: torch.Generator | None = None
                ) -> dict[str, torch.Tensor]:
    """One training step: the generator on L_G + beta * L_grad (L_grad differentiable; with
    w_rot_g, + w_rot_g times its reconstructions' rotation loss), the reference gradients
    updated with this step's dMSE/dW, then GANomaly's discriminator step (with w_rot, its
    rotation head's loss on the four turns of x, mirrored at random by `flips`)."""
    params = dict(g.named_parameters())
    weights = [params[name] for name in reference]
    x_hat, z, z_hat = g(x)
    with torch.no_grad():
        features_real = d.features(x)
    terms = {k: v.mean() for k, v in ganomaly.generator_losses(
        x, x_hat, z, z_hat, features_real, d.features(x_hat)).items()}
    mse = F.mse_loss(x_hat, x)
    use_grad_loss = config.beta != 0 and int(steps) > 0  # no reference yet at the first step
    # create_graph: L_grad depends on the weights through dMSE/dW, so it trains them too
    grads = torch.autograd.grad(mse, weights, create_graph=use_grad_loss, retain_graph=True)
    l_grad = (gradcon.gradient_loss(grads, reference.values()) if use_grad_loss
              else torch.zeros((), device=x.device))
    g_loss = (config.w_adv * terms["l_adv"] + config.w_con * terms["l_con"]
              + config.w_enc * terms["l_enc"] + config.beta * l_grad)
    if config.w_rot_g:
        terms["g_rot"] = rothead.rotation_loss(d, x_hat)[0]
        g_loss = g_loss + config.w_rot_g * terms["g_rot"]
    opt_g.zero_grad(set_to_none=True)
    g_loss.backward()
    if config.reference_loss == "generator":  # W's gradient of the whole loss, as GradCon's code
        gradcon.update_reference(reference, [w.grad for w in weights], steps)
    opt_g.step()
    if config.reference_loss == "mse":
        gradcon.update_reference(reference, grads, steps)
    d_losses = ganomaly.discriminator_step(d, opt_d, x, x_hat, config, flips)
    return {"g_loss": g_loss.detach(), **d_losses, **{k: v.detach() for k, v in
            terms.items()}, "l_grad": l_grad.detach(), "mse": mse.detach()}


def _extra(reference: Mapping[str, torch.Tensor], steps: torch.Tensor,
           combination: Combination | None, n_terms: int) -> dict[str, torch.Tensor]:
    extra = {gradcon.REF_PREFIX + k: v for k, v in reference.items()}
    extra[gradcon.REF_STEPS] = steps
    return extra | scorerule.extra(n_terms, combination)  # NaN until the first epoch's fit


def train(split: OneClassSplit, config: HybridConfig, run: Run,
          device: torch.device | str = "cpu", *,
          on_epoch: Callable[[TrainedHybrid, int], None] | None = None,
          progress_images: int = 16) -> TrainedHybrid:
    """Train the hybrid on the split's normal training images; returns the best epoch's models
    (best by `config.select` on the validation normals, as GANomaly), with its references and
    the combination fitted on that epoch's validation scores."""
    device = torch.device(device)
    g, d = ganomaly.build_models(split.image_size, split.channels, config, device)
    betas = (config.beta1, 0.999)
    opt_g = torch.optim.Adam(g.parameters(), lr=config.lr, betas=betas)
    opt_d = torch.optim.Adam(d.parameters(), lr=config.lr, betas=betas)
    params = dict(g.named_parameters())
    reference = {n: torch.zeros_like(params[n]) for n in gradient_layers(g)}
    steps = torch.zeros((), dtype=torch.long)
    shuffle = torch.Generator().manual_seed(config.seed)
    flips = rothead.rotation_flips(config)
    # the score's combination is fitted during training (each epoch, on its validation scores):
    # on resume only the scoring batch size may change, a new weighting or term trains again
    loop = TrainingLoop(run, METHOD, ganomaly.checkpoint_config(config, split),
                        models={"generator": g, "discriminator": d},
                        optimizers={"generator": opt_g, "discriminator": opt_d},
                        epochs=config.epochs, resume=config.resume, arch_keys=ganomaly.ARCH_KEYS,
                        generators=(shuffle, *flips),
                        extra=_extra(reference, steps, None, len(config.terms)),
                        free_keys=("score_batch_size",))
    # after a resume the loop holds the restored tensors: train on those
    reference = {k: loop.extra[gradcon.REF_PREFIX + k].to(device) for k in reference}
    steps = loop.extra[gradcon.REF_STEPS]
    train_set = split.train.in_range(*VALUE_RANGE)
    # a last batch of one image would break BatchNorm in train mode
    loader = Cycled(train_set.loader(config.batch_size, shuffle=True, generator=shuffle,
                                               drop_last=len(train_set) > config.batch_size),
                              config.min_steps_per_epoch)
    val_images = split.val.in_range(*VALUE_RANGE).tensors()
    shown = val_images[:progress_images].to(device)
    pseudo = pseudo_anomalies(val_images) if config.weighting == "pseudo" else None
    trained = TrainedHybrid(g, d, config, loop.epoch, loop.best_epoch, reference=reference)
    reinits = int(loop.epoch_history.get("d_reinits", [0])[-1]) if loop.epoch_history else 0

    for epoch in loop.epochs():
        g.train()
        d.train()
        for step, (x, _) in loop.steps(loader):
            losses = hybrid_step(g, d, opt_g, opt_d, x.to(device, non_blocking=True), reference,
                                 steps, config, *flips)
            loop.record(step, **losses)
            if losses["d_loss"].item() < ganomaly.D_COLLAPSE:
                ganomaly.reinit_discriminator(d, opt_d)
                reinits += 1
        val_table, val_z = score_with_latent(trained, split.val, combination=None)
        pseudo_table = (score_with_latent(trained, pseudo, combination=None)[0]
                        if config.weighting == "pseudo" else None)
        trained.combination = fit_combination(val_table, config.terms, weighting=config.weighting,
                                              pseudo_table=pseudo_table, weights=config.weights)
        for name in [t for t in (*TERMS, "l_rot") if t in val_table]:
            loop.epoch_history.setdefault(f"val_{name}", []).append(float(val_table[name].mean()))
        loop.epoch_history.setdefault("val_l_enc_rel", []).append(
            ganomaly.validation_criterion(val_table, val_z, "l_enc_rel"))
        loop.epoch_history.setdefault("d_reinits", []).append(float(reinits))
        loop.extra.update(trained.combination.to_tensors())
        criterion = ganomaly.validation_criterion(val_table, val_z, config.select)
        images = None
        if len(shown):
            images = torch.cat([shown, ganomaly.reconstruct(trained, shown)])
        loop.end_epoch(val_loss=criterion, images=images, value_range=VALUE_RANGE,
                       nrow=max(1, len(shown)), metrics={"d_reinits": reinits})
        if on_epoch is not None:
            trained.epoch = epoch + 1
            on_epoch(trained, epoch + 1)

    best = load(run, device, which="best")  # weights, references and combination of that epoch
    return TrainedHybrid(best.generator, best.discriminator, config, best.epoch, loop.best_epoch,
                         history=loop.history, epoch_history=loop.epoch_history,
                         train_seconds=loop.train_seconds, reference=best.reference,
                         combination=best.combination)


def load(run: Run, device: torch.device | str = "cpu", which: str = "best") -> TrainedHybrid:
    """Reload a trained hybrid (networks, reference gradients, combination) from the run folder."""
    config, g, d, checkpoint = ganomaly.load_networks(run, METHOD, HybridConfig, device, which)
    extra = checkpoint["extra"]
    reference = {k[len(gradcon.REF_PREFIX):]: v.to(device) for k, v in extra.items()
                 if k.startswith(gradcon.REF_PREFIX)}
    m = checkpoint["metrics"]
    return TrainedHybrid(g, d, config, checkpoint["epoch"], m.get("best_epoch", -1),
                         history=checkpoint["history"].get("steps", {}),
                         epoch_history=checkpoint["history"].get("epochs", {}),
                         train_seconds=m.get("train_seconds", 0.0), reference=reference,
                         combination=Combination.from_tensors(extra, config.terms))


# ---------------------------------------------------------------------------------------------
# Scoring


def _as_tensor_batches(images, batch_size: int):
    """[-1, 1] image batches for GradCon's scorer (an ImageSet is converted to the range)."""
    from .data import ImageSet

    if isinstance(images, ImageSet):
        return images.in_range(*VALUE_RANGE)
    if isinstance(images, torch.Tensor):
        return images
    return list(image_batches(images, batch_size, VALUE_RANGE))  # an iterable is consumed twice


def score_with_latent(trained: TrainedHybrid, images, *, batch_size: int | None = None,
                      combination: Combination | None | str = "trained"
                      ) -> tuple[ScoreTable, torch.Tensor]:
    """Per-image l_enc, l_con, l_adv (l_rot, acc_rot with the rotation head), l_grad, the
    gradient part's `mse` and per-layer cosines
    `cos_<layer>`, `gradcon` (GradCon's score on this network, mse + grad_weight * l_grad), and `score`
    (the combination; l_enc when none is fitted yet), plus the latent codes z. `images`: an
    ImageSet, a tensor in [-1, 1] or an iterable of batches.
    Eval mode, batched, no test statistic."""
    if not trained.reference:
        raise ValueError("the hybrid has no reference gradients; train it or load it with "
                         "hybrid.load(run)")
    batch_size = batch_size or trained.config.score_batch_size
    images = _as_tensor_batches(images, batch_size)
    table, z = ganomaly.score_with_latent(trained, images, batch_size=batch_size,
                                          combination=None)
    g = trained.generator
    with eval_mode(g):  # the wrapper's own (training) mode would otherwise be restored into g
        grad_table = gradscore.score_table(Reconstructor(g), trained.reference, images,
                                           batch_size=batch_size)
    table["l_grad"] = grad_table["l_grad"]
    table["mse"] = grad_table["mse"]
    table["gradcon"] = gradscore.score_from_terms(table["mse"], table["l_grad"],
                                                trained.config.grad_weight)
    table |= {k: v for k, v in grad_table.items() if k.startswith("cos_")}
    if combination == "trained":
        combination = trained.combination
    table.pop("score")  # GANomaly's; the hybrid's own comes last
    table["score"] = scorerule.column(table, combination)
    return table, z


def score(trained: TrainedHybrid, images, *, batch_size: int | None = None) -> ScoreTable:
    """The house scoring interface: every term per image and the combined `score`."""
    return score_with_latent(trained, images, batch_size=batch_size)[0]


# ---------------------------------------------------------------------------------------------
# Analysis (after the metrics: these read test classes or labels)


def gradient_features(trained: TrainedHybrid, images: torch.Tensor, *, layer: int = -1,
                      batch_size: int = 128) -> torch.Tensor:
    """Per-image dMSE/dW of one decoder transposed-conv weight (default: the last), flattened
    and scaled to unit length: the L_grad representation that is clustered. torch.func
    (functional_call + vmap + grad), eval mode; `images` in [-1, 1]."""
    g = trained.generator
    name = list(trained.reference)[layer]
    device = next(g.parameters()).device
    with eval_mode(g):
        out = [gradscore.per_image_gradients(Reconstructor(g), [name], x.to(device))[name]
               .flatten(1).cpu() for x in images.split(batch_size)]
    feats = torch.cat(out)
    return feats / feats.norm(dim=1, keepdim=True).clamp_min(gradscore.EPS)


def cluster_agreement(features, classes, *, n_clusters: int | None = None, seed: int = 0
                      ) -> tuple[float, np.ndarray]:
    """KMeans (scikit-learn) on per-image features; the adjusted Rand index of the clusters
    against the true classes, and the cluster of each image."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    x = np.asarray(features.detach().cpu() if isinstance(features, torch.Tensor) else features,
                   dtype=np.float64).reshape(len(classes), -1)
    classes = np.asarray(classes)
    k = n_clusters or len(np.unique(classes))
    clusters = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(x)
    return float(adjusted_rand_score(classes, clusters)), clusters


__all__ = ["HybridConfig", "Reconstructor", "SCORE_TERMS", "TERMS", "TERM_SETS",
           "candidate_scores", "TrainedHybrid", "cluster_agreement",
           "gradient_features", "gradient_layers", "hybrid_step", "load", "score",
           "score_with_latent", "train"]
