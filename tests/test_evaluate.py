"""Thresholds and metrics from validation normals; metrics.json entries."""

import json

import numpy as np
import pytest
import torch

from anogan_guide import load_one_class, open_run
from anogan_guide.evaluate import (
    Standardizer,
    evaluate,
    finish_method,
    forget_methods,
    load_scores,
    metrics_table,
    read_metrics,
    record_parameters,
    threshold_from_validation,
    write_split_sizes,
)


def test_threshold_uses_validation_quantile():
    val = torch.arange(100, dtype=torch.float32)
    assert threshold_from_validation(val, 0.05) == pytest.approx(94.05)


def test_metrics_perfect_and_reversed():
    labels = torch.tensor([0, 0, 1, 1])
    good = evaluate(torch.tensor([0.0, 1.0]), torch.tensor([0.1, 0.2, 5.0, 6.0]), labels)
    assert good["auroc"] == 1.0 and good["auprc"] == 1.0 and good["f1"] == 1.0
    bad = evaluate(torch.tensor([0.0, 1.0]), torch.tensor([5.0, 6.0, 0.1, 0.2]), labels)
    assert bad["auroc"] == 0.0


def test_standardizer_is_fitted_on_validation():
    s = Standardizer.fit(torch.tensor([1.0, 3.0]))
    assert torch.allclose(s(torch.tensor([2.0, 4.0])), torch.tensor([0.0, 2.0]))


def test_metrics_json_entries_and_scores(tmp_path):
    run = open_run(tmp_path)
    split = load_one_class("digits", 0, image_size=16)
    write_split_sizes(run, split)
    idx = torch.arange(len(split.test))
    rng = np.random.default_rng(0)
    noise = torch.from_numpy(rng.normal(size=len(idx))).float()
    test = {"score": split.test_labels.float() * 3 + noise, "part": noise}
    val = {"score": torch.from_numpy(rng.normal(size=len(split.val))).float(),
           "part": torch.zeros(len(split.val))}
    dev = {"score": torch.from_numpy(rng.normal(2.0, 1.0, size=len(split.dev))).float(),
           "part": torch.ones(len(split.dev))}
    with pytest.raises(ValueError, match="score split.dev"):
        finish_method(run, "demo-method", split, val, test, dev=None, test_indices=idx,
                      train_seconds=1.0, score_seconds=0.5, params={"epochs": 1})
    entry = finish_method(run, "demo-method", split, val, test, dev=dev, test_indices=idx,
                          train_seconds=1.0, score_seconds=0.5, params={"epochs": 1})
    assert entry["auroc"] > 0.9
    # the development figure: validation normals (N(0, 1)) vs development anomalies (N(2, 1))
    assert entry["dev"]["n_normal"] == len(split.val) == 12
    assert entry["dev"]["n_anomalous"] == len(split.dev) > 100
    assert 0.8 < entry["dev"]["auroc"] < 1.0
    data = json.loads(run.metrics_path.read_text())
    assert data["n_train"] == len(split.train) and "demo-method" in data["methods"]
    assert set(data["methods"]["demo-method"]) == {
        "auroc", "auprc", "f1", "threshold", "dev", "train_seconds", "score_seconds",
        "score_images_per_second", "params", "made"}
    saved = load_scores(run, "demo-method")
    assert np.allclose(saved.test["part"], noise.numpy()) and len(saved.val["score"]) == 12
    assert np.allclose(saved.dev["part"], 1.0) and len(saved.dev["score"]) == len(split.dev)
    assert "demo-method" in metrics_table(data)
    # a method a notebook no longer makes: its entry and scores go, the rest stays
    finish_method(run, "other-method", split, val, test, dev=dev, test_indices=idx,
                  train_seconds=1.0, score_seconds=0.5, params={})
    assert forget_methods(run, ["other-method", "never-made"]) == ["other-method"]
    assert list(read_metrics(run)["methods"]) == ["demo-method"]
    assert not (run.scores / "other-method.npz").exists()
    assert (run.scores / "demo-method.npz").exists()
    # the data notebook run again (the same split) keeps every notebook's record, defaults too
    record_parameters(run, "03_demo", {"epochs": 1}, {"epochs": 20})
    write_split_sizes(run, split)
    again = read_metrics(run)
    assert "demo-method" in again["methods"] and again["defaults"]["03_demo"] == {"epochs": 20}
    assert again["parameters"]["03_demo"] == {"epochs": 1}
    # a new split starts a fresh metrics file: old method entries would be stale
    write_split_sizes(run, load_one_class("digits", 1, image_size=16))
    assert read_metrics(run)["methods"] == {}
