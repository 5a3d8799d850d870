"""The GANomaly + GradCon ensemble: late fusion of two saved detectors, fitted on normals only."""

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

import anogan_guide as ag
from anogan_guide import ensemble, evaluate


@pytest.fixture(scope="module")
def split():
    return ag.load_one_class("digits", 0, seed=0)


def _save(run, method, split, scores_by_part, indices=None):
    """Scores for the validation normals, the development anomalies and the test set."""
    indices = torch.arange(len(split.test)) if indices is None else indices
    val, dev, test = ({"score": torch.as_tensor(scores_by_part[p])} for p in ("val", "dev", "test"))
    evaluate.save_scores(run, method, val, test, dev=dev, test_labels=split.test_labels[indices],
                         test_classes=split.test_classes[indices], test_indices=indices)


def _scores(split, rng, scale, shift, signal):
    """Normals ~ N(shift, scale), anomalies shifted up by `signal` standard deviations."""
    labels = split.test_labels.numpy()
    return {"val": shift + scale * rng.standard_normal(len(split.val)),
            "dev": shift + scale * (signal + rng.standard_normal(len(split.dev))),
            "test": shift + scale * (signal * labels + rng.standard_normal(len(labels)))}


@pytest.fixture()
def run(tmp_path, split):
    run = ag.open_run(tmp_path)
    evaluate.write_split_sizes(run, split)
    rng = np.random.default_rng(0)
    parts = {"ganomaly": _scores(split, rng, 0.01, 0.02, 1.0),  # different units on purpose
             "gradcon": _scores(split, rng, 3.0, -5.0, 1.5)}
    for method, scores in parts.items():
        _save(run, method, split, scores)
        evaluate.record_method(run, method, {
            "auroc": 0.5, "auprc": 0.5, "f1": 0.0, "threshold": 0.0, "dev": None,
            "train_seconds": 10.0, "score_seconds": 1.0, "score_images_per_second": 1.0,
            "params": {}})
    return run, parts


def test_the_ends_of_the_share_are_the_parts_and_the_mix_uses_validation_statistics(run, split):
    run, parts = run
    labels = split.test_labels.numpy()
    for share, part in ((0.0, "ganomaly"), (1.0, "gradcon")):
        entry = ensemble.finish(run, split, share)
        assert entry["auroc"] == pytest.approx(roc_auc_score(labels, parts[part]["test"]))
    entry = ensemble.finish(run, split, 0.5)
    z = {m: (p["test"] - p["val"].mean()) / p["val"].std() for m, p in parts.items()}
    assert entry["auroc"] == pytest.approx(roc_auc_score(labels, z["ganomaly"] + z["gradcon"]))
    assert entry["train_seconds"] == 20.0  # the two parts' training together
    assert entry["params"]["combination"] == "0.500*z(ganomaly) + 0.500*z(gradcon)"
    assert entry["dev"]["n_anomalous"] == len(split.dev)
    saved = evaluate.load_scores(run, "ensemble")
    assert set(saved.test) == {"ganomaly", "gradcon", "score"}
    assert "ensemble" in evaluate.read_metrics(run)["methods"]


def test_development_curve_reads_no_test_image(run, split):
    run, parts = run
    curve = ensemble.dev_auroc_per_share({m: p["val"] for m, p in parts.items()},
                                         {m: p["dev"] for m, p in parts.items()}, [0.0, 0.5, 1.0])
    y = np.r_[np.zeros(len(split.val)), np.ones(len(split.dev))]
    assert curve[0.0] == pytest.approx(roc_auc_score(y, np.r_[parts["ganomaly"]["val"],
                                                              parts["ganomaly"]["dev"]]))
    assert curve[1.0] == pytest.approx(roc_auc_score(y, np.r_[parts["gradcon"]["val"],
                                                              parts["gradcon"]["dev"]]))
    assert curve[0.5] > max(curve[0.0], curve[1.0])  # independent noise: the mix is better


def test_bad_input_is_one_clear_error(run, split, tmp_path):
    run, parts = run
    with pytest.raises(ValueError, match=r"share 1.5 is outside \[0, 1\]"):
        ensemble.finish(run, split, 1.5)
    _save(run, "gradcon", split, {k: v[:-1] if k == "test" else v
                                  for k, v in parts["gradcon"].items()},
          indices=torch.arange(len(split.test) - 1))
    with pytest.raises(ValueError, match="ganomaly and gradcon scored different images"):
        ensemble.load_parts(run)
    empty = ag.open_run(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="run ganomaly's notebook with this run_dir first"):
        ensemble.load_parts(empty)


def test_any_methods_of_a_run_mix_with_their_weights(run, split):
    run, parts = run
    labels = split.test_labels.numpy()
    rng = np.random.default_rng(1)
    third = _scores(split, rng, 2.0, 1.0, 0.5)
    _save(run, "rotnet", split, third)
    evaluate.record_method(run, "rotnet", {
        "auroc": 0.5, "auprc": 0.5, "f1": 0.0, "threshold": 0.0, "dev": None,
        "train_seconds": 5.0, "score_seconds": 1.0, "score_images_per_second": 1.0, "params": {}})
    entry = ensemble.finish(run, split, parts=("rotnet", "gradcon", "ganomaly"), weights=(2, 1, 1))
    z = {m: (p["test"] - p["val"].mean()) / p["val"].std()
         for m, p in {**parts, "rotnet": third}.items()}
    expected = 0.5 * z["rotnet"] + 0.25 * z["gradcon"] + 0.25 * z["ganomaly"]
    assert entry["auroc"] == pytest.approx(roc_auc_score(labels, expected))
    assert entry["params"]["parts"] == ["rotnet", "gradcon", "ganomaly"]
    assert entry["params"]["weights"] == pytest.approx([0.5, 0.25, 0.25])
    assert entry["train_seconds"] == 25.0
    assert set(evaluate.load_scores(run, "ensemble").test) == {"rotnet", "gradcon", "ganomaly", "score"}
    pair = ensemble.finish(run, split, 0.3, parts="rotnet,gradcon")  # two parts: the share
    assert pair["params"]["combination"] == "0.700*z(rotnet) + 0.300*z(gradcon)"
    with pytest.raises(ValueError, match="3 parts .* need one weight each"):
        ensemble.finish(run, split, parts="rotnet,gradcon,ganomaly")
    with pytest.raises(ValueError, match="at least two methods"):
        ensemble.finish(run, split, parts="rotnet")
    with pytest.raises(FileNotFoundError, match=r"hybrid's scores.*mix methods it has \(ganomaly, "
                                                r"gradcon, rotnet"):
        ensemble.finish(run, split, parts="rotnet,hybrid")
