"""The development study: candidate defaults judged on validation + development scores only."""

import numpy as np
import pytest
import torch

from anogan_guide import devstudy, evaluate, hybrid, open_run
from anogan_guide.runs import save_checkpoint, write_json
from anogan_guide.sweep import plan_runs


def _write(folder, method, val, dev, test):
    run = open_run(folder)
    n = len(next(iter(test.values())))
    evaluate.save_scores(run, method, val, test, dev=dev, test_labels=torch.zeros(n),
                         test_classes=torch.zeros(n), test_indices=torch.arange(n))


def _sweep_folders(tmp_path, n_runs=3):
    runs = plan_runs("digits", list(range(n_runs)), [0], tmp_path)
    for r in runs:
        write_json(r.folder / "metrics.json", {"dataset": "digits", "seed": 0,
                                                       "normal_class": r.normal_class})
    return runs


def test_grad_weight_is_judged_on_development_scores_and_the_test_part_is_never_read(tmp_path):
    runs = _sweep_folders(tmp_path)
    g = torch.Generator().manual_seed(0)
    for r in runs:
        # the gradient term separates normals from development anomalies, the MSE does not
        val = {"mse": torch.rand(50, generator=g) * 0.1, "l_grad": torch.randn(50, generator=g) * 0.1}
        dev = {"mse": torch.rand(200, generator=g) * 0.1,
               "l_grad": torch.randn(200, generator=g) * 0.1 + 0.3}
        test = {"mse": torch.full((20,), float("nan")), "l_grad": torch.full((20,), float("nan"))}
        _write(r.folder, "gradcon", val, dev, test)
    results = devstudy.study_score_rules([r.folder for r in runs], "gradcon")
    means = {k: np.mean(v) for k, v in results.items()}
    assert all(len(v) == 3 for v in results.values())
    assert 0.4 < means["grad_weight 0"] < 0.6 and means["grad_weight 1"] > 0.95
    assert max(means, key=means.get) == "grad_weight 1"
    text = devstudy.study([("digits", [0, 1, 2], [0], tmp_path)])
    assert "| **grad_weight 1** |" in text and "| grad_weight 0.03 (default) |" in text
    assert "nan" not in text


def test_hybrid_rules_are_fitted_on_validation_and_runs_without_dev_are_left_out(tmp_path):
    runs = _sweep_folders(tmp_path, 2)
    g = torch.Generator().manual_seed(1)
    terms = hybrid.SCORE_TERMS
    val = {t: torch.randn(40, generator=g) for t in terms}
    dev = {t: torch.randn(80, generator=g) + 4.0 * (t == "l_grad") for t in terms}
    _write(runs[0].folder, "hybrid", val, dev, {t: torch.zeros(5) for t in terms})
    _write(runs[1].folder, "hybrid", val, {}, {t: torch.zeros(5) for t in terms})  # no dev part
    results = devstudy.study_score_rules([r.folder for r in runs], "hybrid")
    assert all(len(v) == 1 for v in results.values())
    assert results["l_grad alone"][0] > 0.95 and results["l_enc alone"][0] < 0.7
    assert results["l_enc + l_grad (max)"][0] > 0.95 and "l_enc + l_grad (pseudo)" not in results


def test_select_criteria_read_the_per_epoch_development_auroc(tmp_path):
    runs = _sweep_folders(tmp_path, 1)
    history = {"epochs": {"val_l_enc_rel": [0.5, 0.2, 0.3], "val_l_enc": [0.1, 0.2, 0.3],
                          "val_l_con": [0.3, 0.2, 0.1], "dev_auroc": [0.7, 0.9, 0.8]}}
    save_checkpoint(open_run(runs[0].folder).model_saves / "ganomaly_last.pt", method="ganomaly",
                    config={}, epoch=3, models={}, optimizers={}, rng={}, history=history)
    assert devstudy.study_select([runs[0].folder]) == {
        "l_enc_rel": [0.9], "l_enc": [0.7], "l_con": [0.8], "last": [0.8]}


def test_cli_pools_sweeps_each_data_set_counting_once(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    for folder, n, shift in ((a, 1, 3.0), (b, 3, 0.0)):  # a: l_grad separates; b: it does not
        for r in _sweep_folders(folder, n):
            _write(r.folder, "gradcon", {"mse": torch.rand(40), "l_grad": torch.rand(40)},
                   {"mse": torch.rand(60), "l_grad": torch.rand(60) + shift},
                   {"mse": torch.zeros(3), "l_grad": torch.zeros(3)})
    assert devstudy.main(["--sweep", "digits", "0", "0", str(a), "--sweep", "digits", "0-2", "0",
                          str(b)]) == 0
    text = (a / "dev-study.md").read_text()
    assert "| candidate | digits (a) | digits (b) | mean |" in text
    assert "Runs: digits (a) 1, digits (b) 3." in text
    row = next(line for line in text.splitlines() if line.replace("*", "").startswith(
        "| grad_weight 1 |"))
    first, second, mean = (float(x) for x in row.split("|")[2:5])
    assert first == 1.0 and mean == pytest.approx((first + second) / 2, abs=1e-4)
    assert devstudy.main(["--sweep", "digits", "x", "0", str(a)]) == 2
    assert "devstudy: error:" in capsys.readouterr().err


def test_the_complexity_correction_is_judged_on_development_scores(tmp_path):
    import anogan_guide as ag
    from anogan_guide import complexity

    runs = _sweep_folders(tmp_path, 1)
    run = ag.open_run(runs[0].folder)
    split = ag.load_split(run, dataset="digits", normal_class=0, image_size=16, seed=0,
                          val_fraction=0.1)  # writes split.json
    c = complexity.split_complexity(split)
    g = np.random.default_rng(0)
    # a score that mostly measures complexity, plus a little signal for the anomalies
    val = {"score": torch.as_tensor(5 * c["val"] + g.normal(0, 0.05, len(c["val"])))}
    dev = {"score": torch.as_tensor(5 * c["dev"] + 0.3 + g.normal(0, 0.05, len(c["dev"])))}
    test = {"score": torch.full((3,), float("nan"))}
    _write(run.root, "rotnet", val, dev, test)
    results = devstudy.study_complexity([run.root], "rotnet")
    assert results["complexity-corrected"][0] > 0.95 > results["as scored"][0]
    text = devstudy.study([("digits", [0], [0], tmp_path)])
    assert "### Complexity correction: rotnet" in text
    assert "| **complexity-corrected** |" in text and "| as scored (default) |" in text


def test_the_ensemble_pairs_are_judged_where_both_parts_were_scored(tmp_path):
    """RotNet separates the development anomalies, GANomaly does not: in the RotNet + GANomaly
    section GANomaly's share 0 ranks first; the GANomaly + GradCon pair has no GradCon scores
    and no section."""
    runs = _sweep_folders(tmp_path, 2)
    g = torch.Generator().manual_seed(2)
    for r in runs:
        _write(r.folder, "rotnet", {"score": torch.randn(60, generator=g)},
               {"score": torch.randn(90, generator=g) + 3.0}, {"score": torch.zeros(4)})
        _write(r.folder, "ganomaly", {"score": torch.randn(60, generator=g)},
               {"score": torch.randn(90, generator=g)}, {"score": torch.zeros(4)})
    results = devstudy.study_ensemble([r.folder for r in runs], ("rotnet", "ganomaly"))
    means = {k: np.mean(v) for k, v in results.items()}
    assert all(len(v) == 2 for v in results.values())
    assert max(means, key=means.get) == "share 0" and means["share 1"] < 0.65
    assert devstudy.study_ensemble([r.folder for r in runs], ("ganomaly", "gradcon")) == \
        {f"share {s:g}": [] for s in devstudy.ensemble.SHARES}
    text = devstudy.study([("digits", [0, 1], [0], tmp_path)])
    assert "### Ensemble of rotnet and ganomaly" in text and "| **share 0** |" in text
    assert "### Ensemble of ganomaly and gradcon" not in text


def test_a_third_method_joining_the_runs_ensemble_is_judged_as_a_pair_with_it(tmp_path):
    """The run's ensemble separates half of the development anomalies, the f-AnoGAN encoder the
    other half: the (ensemble, fanogan) section ranks a mix above either alone."""
    runs = _sweep_folders(tmp_path, 2)
    g = torch.Generator().manual_seed(3)
    for r in runs:
        shift = torch.cat([torch.full((45,), 4.0), torch.zeros(45)])
        _write(r.folder, "ensemble", {"score": torch.randn(60, generator=g)},
               {"score": torch.randn(90, generator=g) + shift}, {"score": torch.zeros(4)})
        val, dev = torch.randn(60, generator=g), torch.randn(90, generator=g) + shift.flip(0)
        # the encoder's score files also hold its mapping terms (the study's `lam` section)
        _write(r.folder, "fanogan", {"score": val, "residual": val, "discrimination": val},
               {"score": dev, "residual": dev, "discrimination": dev},
               {k: torch.zeros(4) for k in ("score", "residual", "discrimination")})
    results = devstudy.study_ensemble([r.folder for r in runs], ("ensemble", "fanogan"))
    means = {k: np.mean(v) for k, v in results.items()}
    assert max(means, key=means.get) not in ("share 0", "share 1")
    assert means["share 0.5"] > max(means["share 0"], means["share 1"]) + 0.1
    text = devstudy.study([("digits", [0, 1], [0], tmp_path)])
    assert "### Ensemble of ensemble and fanogan" in text


def test_anogan_head_candidates_are_fitted_on_validation_and_runs_without_the_head_left_out(
        tmp_path):
    runs = _sweep_folders(tmp_path, 2)
    g = torch.Generator().manual_seed(3)

    def table(n, shift):
        return {"score": torch.randn(n, generator=g), "residual": torch.randn(n, generator=g),
                "discrimination": torch.randn(n, generator=g),
                "anogan": torch.randn(n, generator=g),
                "l_rot": torch.randn(n, generator=g) + shift, "acc_rot": torch.zeros(n)}

    _write(runs[0].folder, "anogan", table(50, 0.0), table(120, 2.5), table(5, 0.0))
    no_head = {k: v for k, v in table(50, 0.0).items() if k not in ("l_rot", "acc_rot", "anogan")}
    _write(runs[1].folder, "anogan", no_head, no_head, no_head)
    results = devstudy.study_head([r.folder for r in runs])
    assert all(len(v) == 1 for v in results.values())
    assert results["l_rot alone"][0] > 0.9 and 0.35 < results["anogan alone (head)"][0] < 0.65
    assert results["z(anogan) + 4 z(l_rot)"][0] > results["z(anogan) + 1 z(l_rot)"][0]
    text = devstudy.study([("digits", [0, 1], [0], tmp_path)])
    assert "### anogan with the rotation head: the score" in text
    assert "| **l_rot alone** |" in text


@pytest.mark.parametrize("method", ["ganomaly", "hybrid"])
def test_the_l_rot_weight_is_judged_where_the_run_has_the_head(tmp_path, method):
    runs = _sweep_folders(tmp_path, 2)
    g = torch.Generator().manual_seed(4)
    others = ("l_enc", "l_con", "l_adv") + (("l_grad", "mse", "gradcon") if method == "hybrid"
                                            else ())

    def table(n, rot_shift, with_head=True):  # only the head's term tells the two apart
        t = {k: torch.randn(n, generator=g) for k in (*others, "score")}
        return t | ({"l_rot": torch.randn(n, generator=g) + rot_shift} if with_head else {})

    _write(runs[0].folder, method, table(60, 0.0), table(150, 3.0), table(5, 0.0))
    no_head = table(60, 0.0, with_head=False)
    _write(runs[1].folder, method, no_head, no_head, no_head)
    rules = devstudy.rotation_weight_rules(method)
    results = devstudy.study_score_rules([r.folder for r in runs], method, rules, needs="l_rot")
    assert all(len(v) == 1 for v in results.values())  # the run without the head is left out
    prefix = "z(l_enc) + 0.25 z(l_grad)" if method == "hybrid" else "z(l_enc)"
    aurocs = [results[f"{prefix} + {w:g} z(l_rot)"][0] for w in devstudy.ROT_WEIGHTS]
    assert 0.35 < aurocs[0] < 0.65 and aurocs[-1] > 0.9
    assert aurocs == sorted(aurocs)  # more weight on the only informative term, better
    title = "GANomaly" if method == "ganomaly" else "The hybrid"
    text = devstudy.study([("digits", [0, 1], [0], tmp_path)])
    assert f"### {title} with the rotation head: the weight of l_rot" in text
    assert f"| **{prefix} + 4 z(l_rot)** |" in text
