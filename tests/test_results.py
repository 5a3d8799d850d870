"""07_results and its widgets: saved scores only, threshold explorer, hybrid term weights."""

import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch

import anogan_guide as ag
from anogan_guide import evaluate, widgets
from anogan_guide.plots import confusion_counts

REPO = Path(__file__).resolve().parents[1]
HYBRID_TERMS = ("l_enc", "l_con", "l_adv", "l_grad")


def make_run_folder(root: Path, methods=("ganomaly", "gradcon", "hybrid"), image_size=16):
    """A run folder as 00 plus the method notebooks leave it: the digits split (class 0), and per
    method synthetic scores (anomalies score higher, by a different margin per method/term)."""
    run = ag.open_run(root)
    split = ag.load_split(run, dataset="digits", normal_class=0, image_size=image_size)
    evaluate.write_split_sizes(run, split)
    gen = torch.Generator().manual_seed(0)
    labels = split.test_labels.double()
    for k, method in enumerate(methods):
        terms = HYBRID_TERMS if method == "hybrid" else ("mse",)
        index = torch.arange(len(split.test)) if k != 1 else ag.subsample_test(split, 300)
        val, test = {}, {}
        for j, term in enumerate(terms):
            val[term] = torch.randn(len(split.val), generator=gen) * (j + 1)
            test[term] = (torch.randn(len(index), generator=gen) + (k + j + 1) * 0.5
                          * labels[index]) * (j + 1)
        params = {"k": k}
        if method == "hybrid":  # as hybrid.py: validation z-scores, weights in metrics.json
            weights = dict(zip(terms, (0.4, 0.3, 0.2, 0.1), strict=True))
            z = {t: evaluate.Standardizer.fit(val[t]) for t in terms}
            val["score"] = sum(w * z[t](val[t]) for t, w in weights.items())
            test["score"] = sum(w * z[t](test[t]) for t, w in weights.items())
            params["combination"] = " + ".join(f"{w:.3f}*z({t})" for t, w in weights.items())
        else:
            val["score"] = sum(val[t] / (j + 1) for j, t in enumerate(terms))
            test["score"] = sum(test[t] / (j + 1) for j, t in enumerate(terms))
        dev = {"score": torch.ones(len(split.dev)) * (k + 1)}
        evaluate.finish_method(run, method, split, val, test, dev=dev, test_indices=index,
                               train_seconds=1.0 + k, score_seconds=0.5, params=params)
    return run, split


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    run, split = make_run_folder(tmp_path_factory.mktemp("results"))
    saved = {m: evaluate.load_scores(run, m) for m in evaluate.read_metrics(run)["methods"]}
    return run, split, saved


def _counts(html: str) -> tuple[int, ...]:
    import re

    return tuple(int(re.search(rf"{k} (\d+)", html).group(1)) for k in ("TN", "FP", "FN", "TP"))


def test_threshold_explorer_starts_at_validation_threshold_and_follows_the_slider(prepared):
    _, split, saved = prepared
    box = widgets.method_threshold_explorer(saved, split.test, max_images=4)
    s = saved[box.method.value]
    start = evaluate.threshold_from_validation(s.val["score"])
    assert box.threshold.value == pytest.approx(start, rel=1e-6, abs=box.threshold.step)
    cm = confusion_counts(s.test["score"], s.test_labels, box.threshold.value)
    assert _counts(box.confusion.value) == tuple(cm.ravel().tolist())
    before = box.confusion.value
    box.threshold.value = box.threshold.min  # everything called anomalous
    tn, fp, fn, tp = _counts(box.confusion.value)
    assert box.confusion.value != before and tn + fn <= 1 and tp >= int(s.test_labels.sum()) - 1
    box.threshold.value = box.threshold.max  # (almost) nothing called anomalous
    tn, fp, fn, tp = _counts(box.confusion.value)
    assert fp == 0 and tp <= 1
    assert "precision" in box.stats.value and "recall" in box.stats.value


def test_threshold_explorer_switches_methods_with_their_own_range_and_test_images(prepared):
    _, split, saved = prepared
    box = widgets.method_threshold_explorer(saved, split.test)
    for method in ("gradcon", "hybrid", "ganomaly"):
        box.method.value = method
        s = saved[method]
        scores = np.concatenate([s.val["score"], s.test["score"]])
        assert box.threshold.min == pytest.approx(scores.min())
        assert box.threshold.max == pytest.approx(scores.max())
        assert box.threshold.min <= box.threshold.value <= box.threshold.max
        tn, fp, fn, tp = _counts(box.confusion.value)
        assert tn + fp + fn + tp == len(s.test["score"])  # gradcon scored a 300-image subsample
    with pytest.raises(ValueError, match="no saved scores"):
        widgets.method_threshold_explorer({})


def test_term_weights_one_term_alone_and_all(prepared):
    _, _, saved = prepared
    hybrid = saved["hybrid"]
    w = widgets.term_weight_explorer(hybrid)
    sliders = {c.description: c for c in w.children[:-1]}
    assert list(sliders) == list(HYBRID_TERMS)
    assert all(s.value == pytest.approx(0.25) for s in sliders.values())
    for term in HYBRID_TERMS:
        for name, s in sliders.items():
            s.value = 1.0 if name == term else 0.0
        alone = evaluate.evaluate(hybrid.val[term], hybrid.test[term], hybrid.test_labels)
        assert w.result["auroc"] == pytest.approx(alone["auroc"])  # z-scores keep the order
    z = {t: evaluate.Standardizer.fit(hybrid.val[t]) for t in HYBRID_TERMS}
    for s in sliders.values():
        s.value = 0.5
    combined = sum(z[t](torch.as_tensor(hybrid.test[t])) for t in HYBRID_TERMS)
    from sklearn.metrics import roc_auc_score

    assert w.result["auroc"] == pytest.approx(roc_auc_score(hybrid.test_labels, combined.numpy()))
    with pytest.raises(ValueError, match="not in the saved scores"):
        widgets.term_weight_explorer(hybrid, terms=["l_nope"])


def test_term_weights_leave_out_the_score_as_scored_of_a_corrected_run(prepared):
    """A run that recorded the complexity-corrected score keeps the score as scored as
    score_raw: that is the score again, not a term to weigh."""
    import dataclasses

    _, _, saved = prepared
    gradcon = saved["gradcon"]
    corrected = dataclasses.replace(
        gradcon, val={**gradcon.val, "score_raw": gradcon.val["score"]},
        test={**gradcon.test, "score_raw": gradcon.test["score"]})
    w = widgets.term_weight_explorer(corrected)
    assert [c.description for c in w.children[:-1]] == ["mse"]


def test_term_weights_start_from_the_fitted_combination(prepared):
    run, _, saved = prepared
    entry = evaluate.read_metrics(run)["methods"]["hybrid"]
    fitted = widgets.weights_from_description(entry["params"]["combination"])
    assert fitted == {"l_enc": 0.4, "l_con": 0.3, "l_adv": 0.2, "l_grad": 0.1}
    w = widgets.term_weight_explorer(saved["hybrid"], weights=fitted)
    assert w.result["auroc"] == pytest.approx(entry["auroc"])
    assert w.result["threshold"] == pytest.approx(entry["threshold"])
    assert widgets.weights_from_description("") == {}


def _run_cli(*args):
    return subprocess.run([sys.executable, "-m", "anogan_guide.cli", "run", *args, "-f",
                           str(REPO / "params" / "ci.yaml")], capture_output=True, text=True,
                          timeout=600, cwd=REPO)


def _stream_text(path: Path) -> str:
    nb = nbformat.read(path, as_version=4)
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.outputs if o.output_type == "stream")


@pytest.mark.slow
def test_results_notebook_reads_every_method_without_retraining(tmp_path):
    make_run_folder(tmp_path)
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "scores").iterdir()}
    result = _run_cli("07_results", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    text = _stream_text(tmp_path / "notebooks" / "07_results.ipynb")
    assert "methods compared: ganomaly, gradcon, hybrid" in text
    assert "anogan: not in this run folder" in text
    assert "| hybrid |" in text
    assert "weights fitted on the validation normals: {'l_enc': 0.4," in text
    assert before == {p: p.stat().st_mtime_ns for p in (tmp_path / "scores").iterdir()}
    assert not list((tmp_path / "model_saves").iterdir())  # nothing trained


@pytest.mark.slow
def test_results_notebook_after_data_prep_only_says_nothing_to_compare(tmp_path):
    result = _run_cli("00_data_prep", "07_results", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    text = _stream_text(tmp_path / "notebooks" / "07_results.ipynb")
    assert "nothing to compare yet" in text
