"""The rotation head's development study: development AUROC (validation normals vs other
classes' training images) of every score candidate, from the val/ and dev/ parts of each study
run's score file; the test part is never read. Baselines without the head: the development
figures of the committed table runs (results/cifar10, results/mnist, seed 0).

    python results/devstudy-rotation-head/analyse.py RUNS_DIR > table.md
"""
import json
import sys
from pathlib import Path

import numpy as np
import torch

from anogan_guide.evaluate import dev_metrics
from anogan_guide.fusion import fit_combination

REPO = Path(__file__).resolve().parents[2]
CIFAR = ("automobile", "truck", "horse", "airplane")
MNIST = ("2", "8")
SHORT = {"automobile": "auto"}


def load(run_dir, method):
    with np.load(Path(run_dir) / "scores" / f"{method}.npz") as data:
        val = {k[4:]: torch.as_tensor(data[k]) for k in data.files if k.startswith("val/")}
        dev = {k[4:]: torch.as_tensor(data[k]) for k in data.files if k.startswith("dev/")}
    return val, dev


def candidates(method):
    c = {f"{t} alone": (t,) for t in ("l_enc", "l_con", "l_adv", "l_rot")}
    if method == "hybrid":
        c |= {"l_grad alone": ("l_grad",),
              "z(l_enc) + 0.25 z(l_grad) (the hybrid's default)": (("l_enc", "l_grad"), "fixed",
                                                                  (1.0, 0.25))}
    for r in (0.25, 0.5, 1, 2, 4, 8):
        c[f"z(l_enc) + {r:g} z(l_rot)"] = (("l_enc", "l_rot"), "fixed", (1.0, float(r)))
    c["max(z(l_enc), z(l_rot))"] = (("l_enc", "l_rot"), "max", None)
    c["l_enc, l_rot min_variance"] = (("l_enc", "l_rot"), "min_variance", None)
    c["l_enc, l_con, l_adv, l_rot equal"] = (("l_enc", "l_con", "l_adv", "l_rot"), "equal", None)
    if method == "hybrid":
        for r in (0.5, 1, 2, 4):
            c[f"z(l_enc) + 0.25 z(l_grad) + {r:g} z(l_rot)"] = (
                ("l_enc", "l_grad", "l_rot"), "fixed", (1.0, 0.25, float(r)))
        c["max(z(l_enc), z(l_grad), z(l_rot))"] = (("l_enc", "l_grad", "l_rot"), "max", None)
    return c


def dev_aurocs(run_dir, method):
    val, dev = load(run_dir, method)
    out = {}
    for name, spec in candidates(method).items():
        if len(spec) == 1:
            out[name] = dev_metrics(val[spec[0]], dev[spec[0]])["auroc"]
        else:
            comb = fit_combination(val, spec[0], spec[1], weights=spec[2])
            out[name] = dev_metrics(comb(val), comb(dev))["auroc"]
    return out


def baseline(cls, method):
    """The committed table run's development AUROC (no head)."""
    if cls in CIFAR:
        path = REPO / "results/cifar10/folder" / f"class{cls}_seed0/metrics.json"
    else:
        path = REPO / "results/mnist/mnist" / f"class{cls}_seed0/metrics.json"
    return json.loads(path.read_text())["methods"][method]["dev"]["auroc"]


def table(runs_dir, method, prefix, suffix):
    runs = {}
    for cls in (*CIFAR, *MNIST):
        name = f"{prefix}{('mnist' + cls) if cls in MNIST else SHORT.get(cls, cls)}{suffix}"
        if (Path(runs_dir) / name / "scores" / f"{method}.npz").is_file():
            runs[cls] = dev_aurocs(Path(runs_dir) / name, method)
    if not runs:
        return ""
    first = next(iter(runs.values()))
    head = ["candidate", *(c if c in CIFAR else f"MNIST {c}" for c in runs),
            "CIFAR-10 mean", "MNIST mean", "mean of the two"]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    rows = {f"no head (the committed table run's {'l_enc' if method == 'ganomaly' else 'score'})":
            {c: baseline(c, method) for c in runs}}
    rows |= {name: {c: runs[c][name] for c in runs} for name in first}
    for name, values in rows.items():
        cif = [values[c] for c in runs if c in CIFAR]
        mni = [values[c] for c in runs if c in MNIST]
        means = [np.mean(cif) if cif else np.nan, np.mean(mni) if mni else np.nan]
        both = np.mean(means) if cif and mni else np.nan
        cells = [f"{values[c]:.3f}" for c in runs] + [f"{m:.3f}" for m in (*means, both)]
        lines.append(f"| {name} | " + " | ".join(cells).replace("nan", "–") + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    runs_dir = sys.argv[1]
    for title, method, prefix, suffix in (
            ("GANomaly, w_rot 1, w_rot_g 0", "ganomaly", "", "_r1"),
            ("GANomaly, w_rot 1, w_rot_g 0.2 (SS-GAN's generator term)", "ganomaly", "", "_r1g"),
            ("The hybrid, w_rot 1, w_rot_g 0", "hybrid", "hyb_", "_r1")):
        text = table(runs_dir, method, prefix, suffix)
        if text:
            print(f"### {title}\n\n{text}\n")
