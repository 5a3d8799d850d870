"""The GANomaly-GradCon hybrid ("GAN-Grad"): GANomaly trained with GradCon's gradient constraint.

Networks and losses are GANomaly's (`ganomaly.py`): encoder E1 -> decoder -> encoder E2 and a
DCGAN discriminator, L_G = w_adv L_adv + w_con L_con + w_enc L_enc. To that the hybrid adds
GradCon's gradient term (`gradcon.py`) on the decoder's transposed-conv weights W:

    L_grad = -mean_W cos(dMSE/dW, ref_W),      L = L_G + beta * L_grad      (beta ~ 0.03)

with dMSE/dW taken with `create_graph=True`, so L_grad trains the weights (the public hybrid adds
it as a plain number, `.item()`, which changes nothing). The gradient is that of GradCon's MSE
reconstruction loss x vs x_hat (smooth, where the L1 of L_con would give a sign pattern);
ref_W is its running average over the training steps, saved in the checkpoint (`extra`).

Scoring keeps every term per image: l_enc, l_con, l_adv (GANomaly's batched eval-mode pass) and
l_grad with each decoder layer's cosine (GradCon's exact batched per-sample machinery applied
to the generator's reconstruction path E1 -> decoder). The final score combines the terms after
standardising each with the mean and standard deviation of the validation normals
(`evaluate.Standardizer`), combined by a rule fitted on the validation normals only
(`fit_combination`): `max` (the largest z-score, i.e. the term most unusual for a normal image),
`equal` weights (the mean z-score), `min_variance` (the non-negative weights, summing to one,
that make the combined validation score most concentrated), or `pseudo` (the default): of those
three rules and each term alone, the candidate that best separates the validation normals from
their `pseudo_anomalies` (the same images turned and mirrored). A rule fitted on normals alone
cannot tell which terms rise for anomalies; on MNIST some do not (class 0: L_adv at chance), and
every fixed rule then scored below L_enc alone. No test image or label is involved.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import ganomaly, gradcon
from .data import OneClassSplit
from .evaluate import Standardizer
from .ganomaly import GanomalyConfig, TrainedGanomaly
from .nets import GanomalyDiscriminator, GanomalyGenerator
from .runs import Run
from .training import TrainingLoop

METHOD = "hybrid"
VALUE_RANGE = ganomaly.VALUE_RANGE  # the tanh decoder: images in [-1, 1]
TERMS = ("l_enc", "l_con", "l_adv", "l_grad")
WEIGHTINGS = ("pseudo", "equal", "min_variance", "max")
RULES = ("equal", "min_variance", "max")  # the rules `pseudo` chooses from, beside single terms
COMBINATION_PREFIX = "combination/"  # the fitted combination in the checkpoint's `extra`
ScoreTable = dict[str, torch.Tensor]


@dataclass
class HybridConfig(GanomalyConfig):
    """GANomaly's parameters plus the gradient term's weight and the score combination."""

    beta: float = 0.03  # weight of the differentiable gradient loss L_grad in training
    weighting: str = "pseudo"  # how the standardised terms combine: pseudo | equal | min_variance | max
    score_batch_size: int = 256  # images per batched scoring pass

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting={self.weighting!r} is unknown; use one of "
                             f"{', '.join(WEIGHTINGS)}")
        if self.score_batch_size < 1:
            raise ValueError(f"score_batch_size must be at least 1 (got {self.score_batch_size})")


# ---------------------------------------------------------------------------------------------
# The score combination, fitted on validation normals


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
        """(3, n_terms) float64 tensor for a checkpoint's `extra` (the order is TERMS')."""
        rows = [[s.mean for s in self.scalers], [s.std for s in self.scalers], list(self.weights)]
        return {COMBINATION_PREFIX + "stats": torch.tensor(rows, dtype=torch.float64),
                COMBINATION_PREFIX + "max": torch.tensor(float(self.rule == "max"))}

    @classmethod
    def from_tensors(cls, extra: Mapping[str, torch.Tensor], terms: Sequence[str] = TERMS
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
    """AUROC of a score separating validation normals (0) from their pseudo-anomalies (1)."""
    from sklearn.metrics import roc_auc_score

    labels = np.r_[np.zeros(len(values_normal)), np.ones(len(values_pseudo))]
    values = torch.cat([values_normal, values_pseudo]).double().numpy()
    return float(roc_auc_score(labels, values))


def candidate_combinations(val_table: Mapping[str, torch.Tensor], terms: Sequence[str] = TERMS
                           ) -> dict[str, Combination]:
    """What `weighting="pseudo"` chooses from: each term alone, then the rules in RULES, all
    fitted on the validation normals."""
    scalers = tuple(Standardizer.fit(val_table[t]) for t in terms)
    single = {f"{t} alone": Combination(tuple(terms), scalers, tuple(float(u == t) for u in terms))
              for t in terms}
    return single | {rule: fit_combination(val_table, terms, rule) for rule in RULES}


def fit_combination(val_table: Mapping[str, torch.Tensor], terms: Sequence[str] = TERMS,
                    weighting: str = "pseudo",
                    pseudo_table: Mapping[str, torch.Tensor] | None = None) -> Combination:
    """Standardise `terms` with the validation normals' statistics and weight them (see the
    module docstring). `val_table` must hold validation normals only; `weighting="pseudo"`
    also needs `pseudo_table`, the terms of their `pseudo_anomalies`, and returns the candidate
    (`candidate_combinations`) that separates the two best (ties: the earlier candidate)."""
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting={weighting!r} is unknown; use one of {', '.join(WEIGHTINGS)}")
    missing = [t for t in terms if t not in val_table]
    if missing:
        raise ValueError(f"the validation table lacks {missing}; score with hybrid.score first")
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
                steps: torch.Tensor, config: HybridConfig) -> dict[str, torch.Tensor]:
    """One training step: the generator on L_G + beta * L_grad (L_grad differentiable), the
    reference gradients updated with this step's dMSE/dW, then GANomaly's discriminator step."""
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
    opt_g.zero_grad(set_to_none=True)
    g_loss.backward()
    opt_g.step()
    gradcon.update_reference(reference, grads, steps)
    d_loss = ganomaly.discriminator_loss(d(x), d(x_hat.detach()))
    opt_d.zero_grad(set_to_none=True)
    d_loss.backward()
    opt_d.step()
    return {"g_loss": g_loss.detach(), "d_loss": d_loss.detach(), **{k: v.detach() for k, v in
            terms.items()}, "l_grad": l_grad.detach(), "mse": mse.detach()}


def _extra(reference: Mapping[str, torch.Tensor], steps: torch.Tensor,
           combination: Combination | None) -> dict[str, torch.Tensor]:
    extra = {gradcon.REF_PREFIX + k: v for k, v in reference.items()}
    extra[gradcon.REF_STEPS] = steps
    if combination is None:  # placeholders until the first epoch's validation scores
        return extra | {COMBINATION_PREFIX + "stats": torch.full((3, len(TERMS)), float("nan"),
                                                                 dtype=torch.float64),
                        COMBINATION_PREFIX + "max": torch.tensor(0.0)}
    return extra | combination.to_tensors()


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
    loop = TrainingLoop(run, METHOD, ganomaly._config_dict(config, split),
                        models={"generator": g, "discriminator": d},
                        optimizers={"generator": opt_g, "discriminator": opt_d},
                        epochs=config.epochs, resume=config.resume, arch_keys=ganomaly.ARCH_KEYS,
                        generators=(shuffle,), extra=_extra(reference, steps, None))
    # after a resume the loop holds the restored tensors: train on those
    reference = {k: loop.extra[gradcon.REF_PREFIX + k].to(device) for k in reference}
    steps = loop.extra[gradcon.REF_STEPS]
    train_set = split.train.in_range(*VALUE_RANGE)
    # a last batch of one image would break BatchNorm in train mode
    loader = ganomaly._Cycled(train_set.loader(config.batch_size, shuffle=True, generator=shuffle,
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
                                 steps, config)
            loop.record(step, **losses)
            if losses["d_loss"].item() < ganomaly.D_COLLAPSE:
                ganomaly.reinit_discriminator(d, opt_d)
                reinits += 1
        val_table, val_z = score_with_latent(trained, split.val, combination=None)
        pseudo_table = (score_with_latent(trained, pseudo, combination=None)[0]
                        if config.weighting == "pseudo" else None)
        trained.combination = fit_combination(val_table, weighting=config.weighting,
                                              pseudo_table=pseudo_table)
        for name in TERMS:
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
                         combination=Combination.from_tensors(extra))


# ---------------------------------------------------------------------------------------------
# Scoring


def _as_tensor_batches(images, batch_size: int):
    """[-1, 1] image batches for GradCon's scorer (an ImageSet is converted to the range)."""
    from .data import ImageSet

    if isinstance(images, ImageSet):
        return images.in_range(*VALUE_RANGE)
    if isinstance(images, torch.Tensor):
        return images
    return list(ganomaly._batches(images, batch_size))  # an iterable is consumed twice


def score_with_latent(trained: TrainedHybrid, images, *, batch_size: int | None = None,
                      combination: Combination | None | str = "trained"
                      ) -> tuple[ScoreTable, torch.Tensor]:
    """Per-image l_enc, l_con, l_adv, l_grad, the gradient part's `mse` and per-layer cosines
    `cos_<layer>`, and `score` (the combination; l_enc when none is fitted yet), plus the
    latent codes z. `images`: an ImageSet, a tensor in [-1, 1] or an iterable of batches.
    Eval mode, batched, no test statistic."""
    if not trained.reference:
        raise ValueError("the hybrid has no reference gradients; train it or load it with "
                         "hybrid.load(run)")
    batch_size = batch_size or trained.config.score_batch_size
    images = _as_tensor_batches(images, batch_size)
    table, z = ganomaly.score_with_latent(trained, images, batch_size=batch_size)
    g = trained.generator
    mode = g.training
    try:
        grad_table = gradcon.score_table(Reconstructor(g), trained.reference, images,
                                         batch_size=batch_size)
    finally:
        g.train(mode)
    table["l_grad"] = grad_table["l_grad"]
    table["mse"] = grad_table["mse"]
    table |= {k: v for k, v in grad_table.items() if k.startswith("cos_")}
    if combination == "trained":
        combination = trained.combination
    table.pop("score")  # GANomaly's; the hybrid's own comes last
    table["score"] = combination(table) if combination is not None else table["l_enc"].clone()
    return table, z


def score(trained: TrainedHybrid, images, *, batch_size: int | None = None) -> ScoreTable:
    """The house scoring interface: every term per image and the combined `score`."""
    return score_with_latent(trained, images, batch_size=batch_size)[0]


# ---------------------------------------------------------------------------------------------
# Analysis (after the metrics: these read test classes or labels)


def ablation(val_table: Mapping[str, torch.Tensor], test_table: Mapping[str, torch.Tensor],
             test_labels, terms: Sequence[str] = TERMS,
             pseudo_table: Mapping[str, torch.Tensor] | None = None) -> list[dict]:
    """Test AUROC of each term alone and of combinations (each fitted on validation only;
    the `pseudo` rows only when `pseudo_table` is given): rows {"score", "weights", "auroc"}."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(test_labels).astype(int)
    rows = []

    def add(name: str, comb: Combination | None, values: torch.Tensor) -> None:
        rows.append({"score": name, "weights": comb.describe() if comb else "",
                     "auroc": float(roc_auc_score(labels, values.double().numpy()))})

    for t in terms:
        add(f"{t} alone", None, test_table[t])
    subsets = {"GANomaly terms": [t for t in terms if t != "l_grad"],
               "l_enc + l_grad": [t for t in ("l_enc", "l_grad") if t in terms],
               "all terms": list(terms)}
    for weighting in WEIGHTINGS:
        if weighting == "pseudo" and pseudo_table is None:
            continue
        for name, subset in subsets.items():
            comb = fit_combination(val_table, subset, weighting, pseudo_table)
            add(f"{name} ({weighting})", comb, comb(test_table))
    return rows


def ablation_markdown(rows: Sequence[Mapping]) -> str:
    """The ablation as a Markdown table."""
    lines = ["| score | weights (fitted on validation normals) | test AUROC |", "|---|---|---|"]
    lines += [f"| {r['score']} | {r['weights']} | {r['auroc']:.4f} |" for r in rows]
    return "\n".join(lines)


def gradient_features(trained: TrainedHybrid, images: torch.Tensor, *, layer: int = -1,
                      batch_size: int = 128) -> torch.Tensor:
    """Per-image dMSE/dW of one decoder transposed-conv weight (default: the last), flattened
    and scaled to unit length: the L_grad representation that is clustered. torch.func
    (functional_call + vmap + grad), eval mode; `images` in [-1, 1]."""
    g = trained.generator
    mode = g.training
    g.eval()
    name = list(trained.reference)[layer]
    device = next(g.parameters()).device
    try:
        out = [gradcon.per_image_gradients(Reconstructor(g), [name], x.to(device))[name]
               .flatten(1).cpu() for x in images.split(batch_size)]
    finally:
        g.train(mode)
    feats = torch.cat(out)
    return feats / feats.norm(dim=1, keepdim=True).clamp_min(gradcon.EPS)


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


__all__ = ["Combination", "HybridConfig", "Reconstructor", "TERMS", "TrainedHybrid", "ablation",
           "ablation_markdown", "cluster_agreement", "fit_combination", "gradient_features",
           "gradient_layers", "hybrid_step", "load", "min_variance_weights", "score",
           "score_with_latent", "train"]
