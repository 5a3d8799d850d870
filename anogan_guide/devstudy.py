"""Choosing the guidebook's defaults on the development split, never on the test set.

    python -m anogan_guide.devstudy --sweep mnist 0-9 0 results/mnist \
        [--sweep folder airplane,automobile results/cifar10 ...] [--out FILE]

reads one or more sweeps' run folders: the validation and development parts of each method's
score file (`scores/<method>.npz`: `val/...`, `dev/...`) and GANomaly's per-epoch history. It
writes a Markdown study (default: DIR/dev-study.md of the first sweep): for every default the
guidebook ships that can be judged from saved scores, the mean development AUROC (validation
normals vs other classes' training images) of each candidate value over each sweep's classes and
seeds, and with several sweeps the mean over them, which ranks the candidates. The test part of
a score file is never read. Each candidate is a rule fitted on the validation normals of its run
(as the notebooks fit it), then applied to the validation and development scores.

The candidates:
* GradCon's `grad_weight`: score = mse + w * l_grad (the paper's 0.12 among them).
* AnoGAN's `lam`: score = (1 - lam) * residual + lam * discrimination (the paper's 0.1 among them).
* The hybrid's score: each term alone, and every rule of `fusion` over several sets of terms
  (`hybrid.candidate_scores`, as in its notebook's ablation; `pseudo` needs the model and is
  read from the runs' own development figures when they used it).
* The ensemble's parts and share (ensemble.py): for each pair of ENSEMBLE_PAIRS whose scores
  the runs have, the second part's share of the mixed z-scores (a pair whose first part is the
  run's `ensemble` asks whether a third method should join the mix it has).
* GANomaly's best-epoch criterion `select`: the development AUROC of the epoch each criterion
  picks (training records it per epoch for this study; it never selects on it).
* The complexity correction (complexity.py) of each method's score: as scored, or minus the
  line complexity predicts, fitted on the run's validation normals.
* GANomaly's and the hybrid's score with the discriminator's rotation head (runs trained with
  `w_rot > 0`): the weight of z(l_rot) beside the other terms of the parameters files.
* AnoGAN's and f-AnoGAN's score with the discriminator's rotation head (runs trained with
  `w_rot > 0`): the mapping score, the head's l_rot, and z(anogan) + w z(l_rot).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from . import complexity, ensemble
from .evaluate import dev_metrics, read_metrics
from .fusion import fit_combination
from .ganomaly_config import GanomalyConfig
from .gradscore import GRAD_WEIGHT, score_from_terms
from .hybrid import HybridConfig, candidate_scores
from .latent import combine
from .runs import Run, atomic_path
from .sweep import SweepError, parse_list, plan_runs, split_matches

Table = Mapping[str, torch.Tensor]
Rule = Callable[[Table], Callable[[Table], torch.Tensor]]  # fitted on val -> scores a table

GRAD_WEIGHTS = (0.0, 0.015, 0.03, 0.06, 0.12, 0.25, 0.5, 1.0)
LAMBDAS = (0.0, 0.05, 0.1, 0.2, 0.5, 0.9)
SELECT_CRITERIA = ("l_enc_rel", "l_enc", "l_con", "last")


def _fixed(fn: Callable[[Table], torch.Tensor]) -> Rule:
    return lambda val: fn


def _fused(terms: Sequence[str], rule: str, weights: Sequence[float] | None = None) -> Rule:
    return lambda val: fit_combination(val, terms, rule, weights=weights)


def score_rules(method: str) -> dict[str, Rule]:
    """The candidate scores of a method, by name."""
    if method == "gradcon":
        return {f"grad_weight {w:g}": _fixed(lambda t, w=w: score_from_terms(t["mse"], t["l_grad"], w))
                for w in GRAD_WEIGHTS}
    if method in ("anogan", "anogan-wgangp", "fanogan", "fanogan-refine"):
        return {f"lam {lam:g}": _fixed(lambda t, lam=lam: combine(t["residual"],
                                                                 t["discrimination"], lam))
                for lam in LAMBDAS}
    if method == "hybrid":  # the ablation's candidates (`pseudo` needs the model: not here)
        return {name: _fixed(lambda t, term=terms[0]: t[term]) if weighting is None
                else _fused(terms, weighting, weights)
                for name, (terms, weighting, weights) in candidate_scores(with_pseudo=False).items()}
    raise ValueError(f"no score rules to study for {method!r}; use gradcon, anogan, fanogan or "
                     f"hybrid")


HEAD_WEIGHTS = (1, 2, 4)  # the weight of z(l_rot) beside z(anogan): results/dev-study-anogan-head.md


def head_rules() -> dict[str, Rule]:
    """The candidate scores of AnoGAN / f-AnoGAN trained with the rotation head (its score
    files hold `anogan`, `l_rot`): each term alone and z(anogan) + w z(l_rot), fitted on the
    validation normals as notebook 02 fits them (`latentscore.ScoreRule`)."""
    from .latentscore import ScoreRule

    candidates = {"anogan alone (head)": ("anogan", "1"), "l_rot alone": ("l_rot", "1"),
                  **{f"z(anogan) + {w} z(l_rot)": ("anogan,l_rot", f"1,{w}")
                     for w in HEAD_WEIGHTS}}
    def rule(terms: str, weights: str) -> Rule:
        def fit(val: Table) -> Callable[[Table], torch.Tensor]:
            fitted = ScoreRule.fit(val, terms, weights)
            return lambda table: fitted(table)["score"]
        return fit

    return {name: rule(*given) for name, given in candidates.items()}


def study_head(folders: Sequence[Path], method: str = "anogan") -> dict[str, list[float]]:
    """Per candidate of `head_rules`, the development AUROC of every run whose score file has
    the head's `l_rot` (runs without the head are left out)."""
    out: dict[str, list[float]] = {name: [] for name in head_rules()}
    for folder in folders:
        parts = _dev_parts(folder, method)
        if parts is None or "l_rot" not in parts[0]:
            continue
        val, dev = parts
        for name, rule in head_rules().items():
            fitted = rule(val)
            out[name].append(dev_metrics(fitted(val), fitted(dev))["auroc"])
    return out


def _dev_parts(folder: Path, method: str) -> tuple[dict, dict] | None:
    """The validation and development score tables of one run (the test part is not read)."""
    path = folder / "scores" / f"{method}.npz"
    if not path.is_file():
        return None
    with np.load(path) as data:
        val = {k[4:]: torch.from_numpy(data[k]) for k in data.files if k.startswith("val/")}
        dev = {k[4:]: torch.from_numpy(data[k]) for k in data.files if k.startswith("dev/")}
    if method == "hybrid" and "gradcon" not in val and dev:  # scored before the term existed
        weight = _method_params(folder, method).get("grad_weight", HybridConfig().grad_weight)
        for table in (val, dev):
            table["gradcon"] = score_from_terms(table["mse"], table["l_grad"], weight)
    return (val, dev) if dev else None


ROT_WEIGHTS = (0, 0.25, 0.5, 1, 2, 4)  # of z(l_rot): results/dev-study-mnist-rotation.md


def rotation_weight_rules(method: str) -> dict[str, Rule]:
    """The scores of GANomaly or the hybrid trained with the rotation head: the method's default
    score (z(l_enc); the hybrid's z(l_enc) + 0.25 z(l_grad)) plus w z(l_rot) for each w of
    ROT_WEIGHTS (w = 0: the head's model scored without its term)."""
    config = HybridConfig() if method == "hybrid" else GanomalyConfig()
    terms, weights = config.terms, config.weights
    name = " + ".join(f"z({t})" if w == 1 else f"{w:g} z({t})"
                      for t, w in zip(terms, weights, strict=True))
    return {f"{name} + {w:g} z(l_rot)": _fused((*terms, "l_rot"), "fixed", (*weights, w))
            for w in ROT_WEIGHTS}


def study_score_rules(folders: Sequence[Path], method: str,
                      rules: Mapping[str, Rule] | None = None, needs: str | None = None
                      ) -> dict[str, list[float]]:
    """Per candidate rule (default: `score_rules(method)`), the development AUROC of every run
    that has the method's scores (and, with `needs`, that term among them)."""
    rules = score_rules(method) if rules is None else rules
    out: dict[str, list[float]] = {name: [] for name in rules}
    for folder in folders:
        parts = _dev_parts(folder, method)
        if parts is None or (needs is not None and needs not in parts[0]):
            continue
        val, dev = parts
        for name, rule in rules.items():
            fitted = rule(val)
            out[name].append(dev_metrics(fitted(val), fitted(dev))["auroc"])
    return out


COMPLEXITY_METHODS = ("ganomaly", "gradcon", "hybrid", "rotnet", "ensemble", "fanogan")


def study_complexity(folders: Sequence[Path], method: str, cache: dict | None = None
                     ) -> dict[str, list[float]]:
    """The development AUROC of a method's score as scored and complexity-corrected (the line
    fitted on each run's validation normals), in every run that has the method's scores for
    the whole development set; "as scored" is the score before any recorded correction
    (`score_raw`). `cache`: (folder, image size) -> complexities, shared between methods."""
    cache = {} if cache is None else cache
    out: dict[str, list[float]] = {"as scored": [], "complexity-corrected": []}
    for folder in folders:
        parts = _dev_parts(folder, method)
        if parts is None or not Run(folder).split_path.is_file():
            continue
        # complexity of the images the method scored (its own image size, e.g. GradCon's 28 px)
        size = _method_params(folder, method).get("image_size")
        if (folder, size) not in cache:
            cache[folder, size] = complexity.run_complexity(Run(folder), size)
        c = cache[folder, size]
        val, dev = (complexity.as_scored(table) for table in parts)
        if len(val) != len(c["val"]) or len(dev) != len(c["dev"]):
            continue  # scored a sample of the development set
        fitted = complexity.Correction.fit(val, c["val"])
        out["as scored"].append(dev_metrics(val, dev)["auroc"])
        out["complexity-corrected"].append(dev_metrics(fitted(val, c["val"]),
                                                       fitted(dev, c["dev"]))["auroc"])
    return out


def _method_params(folder: Path, method: str) -> dict:
    return read_metrics(Run(folder)).get("methods", {}).get(method, {}).get("params") or {}


def study_recorded(folders: Sequence[Path], method: str) -> dict[str, list[float]]:
    """The development AUROC each run recorded for the method's score as it was run, under a
    name that says how it was scored (the hybrid's weighting and terms)."""
    out: dict[str, list[float]] = {}
    for folder in folders:
        entry = read_metrics(Run(folder)).get("methods", {}).get(method)
        if not entry or not entry.get("dev"):
            continue
        p = entry["params"]
        name = f"as run: {p.get('score_terms', 'l_enc,l_con,l_adv,l_grad')} ({p.get('weighting')})"
        out.setdefault(name, []).append(entry["dev"]["auroc"])
    return out


def study_ensemble(folders: Sequence[Path], pair: Sequence[str] = ensemble.DEFAULT_PARTS
                   ) -> dict[str, list[float]]:
    """Per share of the pair's second part, the ensemble's development AUROC in every run with
    both parts."""
    out: dict[str, list[float]] = {f"share {s:g}": [] for s in ensemble.SHARES}
    for folder in folders:
        parts = {m: _dev_parts(folder, m) for m in pair}
        if any(p is None for p in parts.values()):
            continue
        curve = ensemble.dev_auroc_per_share({m: p[0]["score"] for m, p in parts.items()},
                                             {m: p[1]["score"] for m, p in parts.items()})
        for share, auroc in curve.items():
            out[f"share {share:g}"].append(auroc)
    return out


def study_select(folders: Sequence[Path], method: str = "ganomaly") -> dict[str, list[float]]:
    """Per best-epoch criterion, the development AUROC of the epoch it picks, from the training
    history of each run's last checkpoint (`dev_auroc` per epoch, recorded by training)."""
    from .runs import read_checkpoint

    out: dict[str, list[float]] = {c: [] for c in SELECT_CRITERIA}
    for folder in folders:
        path = Run(folder).model_saves / f"{method}_last.pt"
        if not path.is_file():
            continue
        epochs = read_checkpoint(path, map_location="cpu")["history"].get("epochs", {})
        dev = epochs.get("dev_auroc")
        if not dev:
            continue
        for criterion in SELECT_CRITERIA:
            if criterion == "last":
                out[criterion].append(dev[-1])
            else:
                values = epochs[f"val_{criterion}"]
                out[criterion].append(dev[int(np.argmin(values))])  # the first of equal minima
    return out


def _markdown(title: str, results: Mapping[str, Mapping[str, list[float]]], default: str
              ) -> list[str]:
    """One section: per candidate, the mean development AUROC of each sweep and their mean."""
    labels = [label for label, r in results.items() if any(r.values())]
    if not labels:
        return []
    names = [n for n in dict.fromkeys(n for label in labels for n in results[label])
             if all(results[label].get(n) for label in labels)]
    means = {n: [float(np.mean(results[label][n])) for label in labels] for n in names}
    best = max(names, key=lambda n: np.mean(means[n]))
    runs = ", ".join(f"{label} {len(next(iter(results[label].values())))}" for label in labels)
    lines = [f"### {title}", "", f"Runs: {runs}. Mean development AUROC per sweep"
             + (" and the mean of those (the ranking)" if len(labels) > 1 else "")
             + "; **bold**: the highest; (default): what the guidebook ships.", "",
             "| candidate | " + " | ".join(labels) + (" | mean |" if len(labels) > 1 else " |"),
             "|---|" + "---|" * (len(labels) + (len(labels) > 1))]
    for n in names:
        label = f"**{n}**" if n == best else n
        label += " (default)" if n == default else ""
        cells = [f"{m:.4f}" for m in means[n]]
        if len(labels) > 1:
            cells.append(f"{np.mean(means[n]):.4f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines + [""]


DEFAULTS = {"gradcon": f"grad_weight {GRAD_WEIGHT:g}", "anogan": "lam 0.1", "fanogan": "lam 0.1",
            "hybrid": "l_enc + 0.25 l_grad (fixed)", "ganomaly": "l_enc_rel",
            "ensemble": f"share {ensemble.SHARE:g}"}
SECTIONS = (("GradCon: grad_weight (score = mse + w * l_grad)", "gradcon"),
            ("AnoGAN search: lam", "anogan"), ("f-AnoGAN encoder: lam", "fanogan"),
            ("Hybrid: the score", "hybrid"),
            ("GANomaly: best-epoch criterion (select)", "ganomaly"))
# the pairs the ensemble's parts are chosen from (notebook 06's `parts`, the second part's share
# `gradcon_share`): the published pair, RotNet with each method of the GAN family or GradCon, and
# the f-AnoGAN encoder (the AnoGAN mapping that scores every image) with GANomaly or with the
# run's own ensemble: (ensemble, fanogan) at share s is parts ganomaly,gradcon,fanogan with the
# weights (1 - s) times the ensemble's and s; a pair is studied where the runs have both scores
ENSEMBLE_PAIRS = (("ganomaly", "gradcon"), ("rotnet", "ganomaly"), ("rotnet", "hybrid"),
                  ("rotnet", "gradcon"), ("ganomaly", "fanogan"), ("ensemble", "fanogan"))


def study(sweeps: Sequence[tuple[str, Sequence, Sequence[int], Path]]) -> str:
    """The development study's text for one or more sweeps (dataset, classes, seeds, folder):
    each candidate's mean development AUROC per sweep and, with several, the mean over sweeps,
    which ranks the candidates (each data set counts once, whatever its number of runs)."""
    lines = ["# Development study", "",
             "Development AUROC: the validation normals against other classes' training images "
             "(no test image is read). Written by `python -m anogan_guide.devstudy`. Sweeps:", ""]
    folders = {}
    for dataset, classes, seeds, out in sweeps:
        label = f"{dataset} ({out.name})"
        folders[label] = [r.folder for r in plan_runs(dataset, classes, seeds, out)
                          if split_matches(r, read_metrics(Run(r.folder)))]
        lines.append(f"* {label}: classes {', '.join(map(str, classes))}; seeds "
                     f"{', '.join(map(str, seeds))}; {out}")
    lines.append("")
    cache: dict = {}
    for method in COMPLEXITY_METHODS:
        results = {label: study_complexity(f, method, cache) for label, f in folders.items()}
        lines += _markdown(f"Complexity correction: {method}", results, "as scored")
    for title, method in SECTIONS:
        if method == "ganomaly":
            results = {label: study_select(f) for label, f in folders.items()}
        elif method == "hybrid":
            results = {label: study_recorded(f, method) | study_score_rules(f, method)
                       for label, f in folders.items()}
        else:
            results = {label: study_score_rules(f, method) for label, f in folders.items()}
        lines += _markdown(title, results, DEFAULTS[method])
    for method, title in (("ganomaly", "GANomaly"), ("hybrid", "The hybrid")):
        rules = rotation_weight_rules(method)
        results = {label: study_score_rules(f, method, rules, needs="l_rot")
                   for label, f in folders.items()}
        lines += _markdown(f"{title} with the rotation head: the weight of l_rot", results, "")
    for method in ("anogan", "fanogan", "fanogan-refine"):
        results = {label: study_head(f, method) for label, f in folders.items()}
        lines += _markdown(f"{method} with the rotation head: the score", results, "")
    for first, second in ENSEMBLE_PAIRS:
        results = {label: study_ensemble(f, (first, second)) for label, f in folders.items()}
        lines += _markdown(f"Ensemble of {first} and {second}: {second}'s share s (score = "
                           f"(1 - s) z({first}) + s z({second}))", results,
                           DEFAULTS["ensemble"] if (first, second) == ensemble.DEFAULT_PARTS
                           else "")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m anogan_guide.devstudy",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--sweep", nargs=4, action="append", required=True,
                        metavar=("DATASET", "CLASSES", "SEEDS", "DIR"),
                        help="a sweep's dataset, classes (0-9, or folder names), seeds and folder; "
                             "repeat to pool several")
    parser.add_argument("--out", help="where to write the study (default: DIR/dev-study.md of "
                                      "the first sweep)")
    args = parser.parse_args(argv)
    sweeps = []
    try:
        for dataset, classes, seeds, folder in args.sweep:
            sweeps.append((dataset, parse_list(classes, "class", integers=dataset != "folder"),
                           parse_list(seeds, "seed"), Path(folder)))
    except SweepError as err:
        print(f"devstudy: error: {err}", file=sys.stderr)
        return 2
    text = study(sweeps)
    out = Path(args.out) if args.out else sweeps[0][3] / "dev-study.md"
    with atomic_path(out) as tmp:
        tmp.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
