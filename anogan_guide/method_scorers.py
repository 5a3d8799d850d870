"""The registry entries (`scorers.register`) of the guidebook's first methods: AnoGAN with each
of its mappings, f-AnoGAN, GANomaly, GradCon, the hybrid and the ensemble. Each scores as its
notebook scored, with the parameters the notebook recorded in metrics.json, and maps:

* GANomaly and the hybrid: |x - x_hat|, the mean over channels;
* AnoGAN / f-AnoGAN: |x - G(z)| with z from the method's mapping (the score: the mapping score,
  or its recorded combination with the rotation head's l_rot, `latentscore.ScoreRule`; l_rot
  alone is one forward pass of the head, and the search runs only for the maps);
* GradCon: its reconstruction error (x - x_hat)^2 per pixel, the MSE term of its score; its
  gradient term is a property of the decoder's weights and has no pixel map;
* the ensemble: its parts' maps, each standardised with the mean and standard deviation of its
  maps over the validation normals, mixed with the ensemble's shares.

Later methods register in their own modules (see `scorers`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from . import anogan, fanogan, ganomaly, gradcon, gradscore, hybrid, latent, latentnames
from .evaluate import Standardizer
from .latentscore import ScoreRule
from .scorers import Images, RunSource, Scorer, build, entry_for, register

# ---------------------------------------------------------------------------------------------
# GANomaly and the hybrid: |x - x_hat|


class _Trim:
    """Hands freed heap memory back every gradscore.TRIM_EVERY images. GradCon's per-batch
    temporaries fragment glibc's heap (gradscore), and a detector scores each batch in its own
    call, whose count never reaches the trimming point."""

    def __init__(self) -> None:
        self.scored = 0

    def __call__(self, n: int) -> None:
        self.scored += n
        if self.scored >= gradscore.TRIM_EVERY:
            gradscore._release_free_memory()
            self.scored = 0


def _reconstruction_map(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    return (x - x_hat).abs().mean(1)


@register("ganomaly", checkpoints=("ganomaly_best",))
def _ganomaly(source: RunSource, method: str, device: torch.device) -> Scorer:
    trained = ganomaly.load(source.run, device)
    view = source.view("ganomaly_best")

    def fn(batch: Images, maps: bool):
        x = batch.images(view, ganomaly.VALUE_RANGE)
        scores = ganomaly.score(trained, x, batch_size=len(x))["score"]
        return scores, _reconstruction_map(x, ganomaly.reconstruct(trained, x, batch_size=len(x))
                                           .to(x.device)) if maps else None

    return Scorer(method, (view,), fn, batch_size=256, map_note="|x - x_hat| (GANomaly)")


@register("hybrid", checkpoints=("hybrid_best",))
def _hybrid(source: RunSource, method: str, device: torch.device) -> Scorer:
    trained = hybrid.load(source.run, device)
    view = source.view("hybrid_best")
    trim = _Trim()

    def fn(batch: Images, maps: bool):
        x = batch.images(view, hybrid.VALUE_RANGE)
        scores = hybrid.score(trained, x, batch_size=len(x))["score"]
        trim(len(x))
        return scores, _reconstruction_map(x, ganomaly.reconstruct(trained, x, batch_size=len(x))
                                           .to(x.device)) if maps else None

    return Scorer(method, (view,), fn, batch_size=trained.config.score_batch_size,
                  map_note="|x - x_hat| (the hybrid's generator); its gradient term has no map")


# ---------------------------------------------------------------------------------------------
# GradCon: the reconstruction error


GRADCON_VALUE_RANGE = (0.0, 1.0)  # GradCon's autoencoder reads split.val.tensors(): [0, 1]


@register("gradcon", checkpoints=("gradcon_best",))
def _gradcon(source: RunSource, method: str, device: torch.device) -> Scorer:
    trained = gradcon.load(source.run, device)
    view = source.view("gradcon_best")
    # the notebook scores with its own grad_weight (recorded), whatever the checkpoint says
    grad_weight = float(source.params(method).get("grad_weight", trained.config.grad_weight))
    trim = _Trim()

    def fn(batch: Images, maps: bool):
        x = batch.images(view, GRADCON_VALUE_RANGE)
        scores = gradcon.score(trained, x, batch_size=len(x), grad_weight=grad_weight)["score"]
        trim(len(x))
        if not maps:
            return scores, None
        with torch.no_grad():
            return scores, (x - trained.model.eval()(x)).pow(2).mean(1)

    return Scorer(method, (view,), fn, batch_size=trained.config.score_batch_size,
                  map_note="(x - x_hat)^2, GradCon's reconstruction error; its gradient term "
                           "(the cosine to the reference gradients) has no pixel map")


# ---------------------------------------------------------------------------------------------
# AnoGAN and f-AnoGAN: |x - G(z)| after the mapping


def _gan_loss(source: RunSource, method: str) -> str:
    return source.params(method).get("gan_loss", "wgan-gp" if "wgangp" in method else "bce")


def _latent_checkpoints(source: RunSource, method: str) -> tuple[str, ...]:
    gan_loss = _gan_loss(source, method)
    names = (latentnames.gan_method(gan_loss) + "_best",)
    if method.startswith("fanogan"):
        names += (latentnames.encoder_method(gan_loss) + "_best",)
    return names


def seeded_latents(start: int, n: int, latent_dim: int, seed: int) -> torch.Tensor:
    """Rows start..start+n-1 of `latent.initial_latents(start + n, latent_dim, seed)`: image i
    of a call starts its search where image i of the notebook's call started it."""
    out = torch.empty(n, latent_dim)
    gen = torch.Generator()
    for row, i in enumerate(range(start, start + n)):
        state = np.random.SeedSequence(seed, spawn_key=(i,))  # = SeedSequence(seed).spawn(.)[i]
        gen.manual_seed(int(state.generate_state(1, np.uint64)[0]) & (2**63 - 1))
        out[row] = torch.randn(latent_dim, generator=gen)
    return out


@register(*latentnames.ENTRIES, checkpoints=_latent_checkpoints)
def _latent(source: RunSource, method: str, device: torch.device) -> Scorer:
    params = source.params(method)
    gan_loss = _gan_loss(source, method)
    mapping = params.get("mapping", "iterative" if method.startswith("anogan") else
                         "encoder+refine" if method.endswith("refine") else "encoder")
    model = (anogan.load(source.run, device, gan_loss=gan_loss) if mapping == "iterative"
             else fanogan.load_encoder(source.run, device, gan_loss=gan_loss))
    gan = model if mapping == "iterative" else model.gan
    view = source.view(latentnames.gan_method(gan_loss) + "_best")
    seed = int(source.metrics.get("seed", 0))
    kw = dict(lr=float(params.get("lr", latent.MAP_LR)), lam=float(params.get("lam", latent.LAMBDA)),
              seed=seed, progress_bar=False)
    iterations = int(params.get("iterations", latent.MAP_ITERATIONS))
    rule = ScoreRule.from_params(params)  # the mapping score, or its combination with l_rot

    def fn(batch: Images, maps: bool):
        x = batch.images(view, latent.VALUE_RANGE)
        if not maps and not rule.needs_mapping:  # l_rot alone: the head, no search (notebook 02)
            return rule.on_head(latent.head_terms(gan, x, len(x)))["score"], None
        z0 = (seeded_latents(batch.offset, len(x), gan.config.latent_dim, seed)
              if mapping == "iterative" else None)
        result = latent.map_images(model, x, mapping=mapping, iterations=iterations,
                                   refine_iterations=int(params.get("refine_iterations", 50)),
                                   batch_size=len(x), z0=z0, **kw)
        scores = result.table(rule)["score"]
        if not maps:
            return scores, None
        return scores, _reconstruction_map(x, latent.reconstruct(gan, result.z).to(x.device))

    note = {"iterative": "AnoGAN's search", "encoder": "f-AnoGAN's encoder",
            "encoder+refine": "f-AnoGAN's encoder and a short search"}[mapping]
    return Scorer(method, (view,), fn, batch_size=int(params.get("batch_size", 256)),
                  map_note=f"|x - G(z)|, z from {note}")


# ---------------------------------------------------------------------------------------------
# The ensemble: its parts, standardised and mixed


def _parts(source: RunSource, method: str) -> tuple[str, ...]:
    return tuple(source.params(method).get("parts", ("ganomaly", "gradcon")))


def _part_checkpoints(source: RunSource, method: str) -> tuple[str, ...]:
    return tuple(name for part in _parts(source, method)
                 for name in entry_for(part).checkpoints(source, part))


MAP_STATS = "ensemble/map_stats"  # (2, parts): mean and std of each part's map, validation normals


def _map_stats(parts: list[Scorer], source: RunSource, device: torch.device) -> torch.Tensor:
    """Mean and standard deviation of every part's map over the validation normals' pixels."""
    if MAP_STATS in source.extras:
        return source.extras[MAP_STATS]
    stats = []
    for part in parts:
        view = part.views[0]
        val = source.val_images(view)
        values = []
        for start in range(0, len(val), part.batch_size):
            chunk = val[start:start + part.batch_size]
            values.append(part.run(Images({view.key: chunk}, start, device), True)[1].flatten())
        fitted = Standardizer.fit(torch.cat(values))
        stats.append((fitted.mean, fitted.std))
    return torch.tensor(stats, dtype=torch.float64).T


@register("ensemble", checkpoints=_part_checkpoints, parts=_parts)
def _ensemble(source: RunSource, method: str, device: torch.device) -> Scorer:
    from . import ensemble

    names = _parts(source, method)
    share = float(source.params(method).get("share", ensemble.SHARE))
    parts = [build(source, p, device) for p in names]
    val = {p: torch.as_tensor(source.val_scores(p), dtype=torch.float64) for p in names}
    fitted = ensemble.combination(val, share, source.params(method).get("weights"))
    weights = fitted.weights
    views = tuple(dict.fromkeys(v for part in parts for v in part.views))
    out = parts[0].views[0]
    blind = [f"its part {p} has none ({s.no_map})" for p, s in zip(names, parts, strict=True)
             if s.no_map]
    state: dict = {}

    def fn(batch: Images, maps: bool):
        runs = [part.run(batch, maps) for part in parts]
        scores = fitted({p: r[0] for p, r in zip(names, runs, strict=True)}).double()
        if not maps:
            return scores, None
        if MAP_STATS not in state:
            state[MAP_STATS] = _map_stats(parts, source, device)
        mean, std = state[MAP_STATS]
        mixed = 0.0
        for k, (_, m) in enumerate(runs):
            if m.shape[-1] != out.image_size:
                m = F.interpolate(m.unsqueeze(1), size=(out.image_size, out.image_size),
                                  mode="bilinear", align_corners=False)[:, 0]
            mixed = mixed + weights[k] * (m - float(mean[k])) / float(std[k])
        return scores, mixed

    def export_extras() -> dict:
        if blind:
            return {}
        try:
            state.setdefault(MAP_STATS, _map_stats(parts, source, device))
        except (OSError, ValueError) as err:  # the data is not here: the file scores, no maps
            print(f"note: the ensemble's map standardisation needs the validation normals "
                  f"({err}); the exported detector scores but has no maps")
            return {}
        return {MAP_STATS: state[MAP_STATS]}

    scorer = Scorer(method, views, fn, batch_size=min(p.batch_size for p in parts),
                    no_map=f"the ensemble has no anomaly map: {blind[0]}" if blind else "",
                    map_note=f"{' + '.join(f'{w:g} z({p} map)' for p, w in zip(names, weights, strict=True))}"
                             f", each standardised on the validation normals")
    scorer.extras["export"] = export_extras
    return scorer


__all__ = ["GRADCON_VALUE_RANGE", "MAP_STATS", "seeded_latents"]

