"""Image complexity (PNG size) and the complexity-corrected score, fitted on normals only."""

import numpy as np
import pytest
import torch

from anogan_guide import complexity
from anogan_guide.evaluate import SavedScores


def test_a_busy_image_is_more_complex_than_a_smooth_one():
    g = torch.Generator().manual_seed(0)
    flat = torch.full((1, 3, 32, 32), 128, dtype=torch.uint8)
    faint = 128 + torch.randint(0, 8, (1, 3, 32, 32), generator=g, dtype=torch.uint8)  # 3 bits
    noise = torch.randint(0, 256, (1, 3, 32, 32), generator=g, dtype=torch.uint8)
    bits = complexity.png_bits_per_dim(torch.cat([flat, faint, noise]))
    assert bits[0] < bits[1] < bits[2]
    assert 7.5 < bits[2] < 9.0  # noise does not compress: about 8 bits per dimension
    gray = complexity.png_bits_per_dim(noise[:, :1])
    assert gray.shape == (1,) and 7.5 < gray[0] < 9.5
    with pytest.raises(TypeError, match="uint8 images shaped"):
        complexity.png_bits_per_dim(noise.float())


def _saved(rng, n=400, slope=2.0, signal=1.0):
    """Scores = slope * complexity + noise (+ signal for the anomalies); anomalies are simpler."""
    c = {"val": rng.normal(5, 1, n), "dev": rng.normal(4, 1, n), "test": rng.normal(4.5, 1, n)}
    s = {k: slope * v + rng.normal(0, 0.5, n) for k, v in c.items()}
    s["dev"] += signal
    return SavedScores({"score": s["val"]}, {"score": s["dev"]}, {"score": s["test"]},
                       np.zeros(n, dtype=int), np.zeros(n, dtype=int), np.arange(n)), c


def test_the_correction_removes_what_complexity_predicts_on_validation_normals():
    saved, c = _saved(np.random.default_rng(0))
    fitted = complexity.Correction.fit(saved.val["score"], c["val"])
    assert fitted.slope == pytest.approx(2.0, abs=0.1)
    residual = fitted(saved.val["score"], c["val"])
    assert abs(np.corrcoef(residual, c["val"])[0, 1]) < 1e-6
    row = complexity.compare(saved, c)
    # the anomalies are simpler, so the raw score misses them; corrected, their signal shows
    assert row["dev_auroc"] < 0.5 < row["dev_auroc_corrected"]
    assert row["test_spearman"] > 0.9
    with pytest.raises(ValueError, match="at least 2 validation normals"):
        complexity.Correction.fit([1.0], [2.0])


def test_for_scores_follows_the_test_images_a_method_scored():
    saved, c = _saved(np.random.default_rng(1), n=10)
    saved.test_indices = np.array([3, 1])
    assert complexity.for_scores(c, saved)["test"].tolist() == c["test"][[3, 1]].tolist()
    assert complexity.for_scores(c, saved)["dev"].tolist() == c["dev"].tolist()  # all scored


def test_for_scores_follows_the_development_sample_a_method_scored(tmp_path):
    """AnoGAN's search scores a sample of the development images (max_test_images): the score
    file names it (dev_indices), and the comparison with complexity lines the two up."""
    import torch

    import anogan_guide as ag
    from anogan_guide import evaluate

    split = ag.load_one_class("digits", 0, image_size=16, seed=0)
    run = ag.open_run(tmp_path)
    measured = {"val": np.arange(len(split.val), dtype=float),
                "dev": np.arange(len(split.dev), dtype=float),
                "test": np.arange(len(split.test), dtype=float)}
    dev_indices, test_indices = torch.tensor([5, 0, 9, 2]), torch.arange(len(split.test))
    table = {"val": {"score": torch.linspace(0, 1, len(split.val))},
             "dev": {"score": torch.tensor([3.0, 1.0, 4.0, 1.5])},
             "test": {"score": torch.rand(len(split.test), generator=torch.Generator().manual_seed(0))}}
    evaluate.finish_method(run, "anogan", split, table["val"], table["test"], dev=table["dev"],
                           dev_indices=dev_indices, test_indices=test_indices, train_seconds=0.0,
                           score_seconds=1.0, params={})
    saved = evaluate.load_scores(run, "anogan")
    assert saved.dev_indices.tolist() == [5, 0, 9, 2]
    assert complexity.for_scores(measured, saved)["dev"].tolist() == [5.0, 0.0, 9.0, 2.0]
    assert complexity.compare(saved, complexity.for_scores(measured, saved))["dev_auroc"] is not None
    # a score file from before dev_indices: which images its sample holds is not known
    saved.dev_indices = None
    with pytest.raises(ValueError, match="cover 4 of .* run the method's notebook again"):
        complexity.for_scores(measured, saved)


def test_a_notebook_records_the_corrected_score_and_keeps_the_score_as_scored():
    """correct_tables: the line is fitted on the validation normals' complexity, the score as
    scored stays as score_raw, and compare reads that one (so a corrected run is not corrected
    twice in notebook 07 or the development study)."""
    from anogan_guide.data import load_one_class

    split = load_one_class("digits", 0, image_size=16)
    measured = complexity.split_complexity(split)
    g = np.random.default_rng(0)
    tables = {part: {"score": torch.as_tensor(3 * measured[part] + g.normal(0, 0.1, len(c)))}
              for part, c in measured.items()}
    raw = {part: t["score"].clone() for part, t in tables.items()}
    fitted = complexity.correct_tables(split, tables["val"], tables["test"], tables["dev"])
    assert fitted.slope == pytest.approx(3.0, abs=0.3)
    assert complexity.Correction.from_params({complexity.PARAM: fitted.params()}) == fitted
    assert complexity.Correction(2.0, -1.5).describe() == "score - (2 x complexity - 1.5)"
    assert complexity.Correction.from_params({"grad_weight": 0.03}) is None
    for part, table in tables.items():
        assert torch.equal(table[complexity.RAW], raw[part])
        np.testing.assert_allclose(table["score"], fitted(raw[part], measured[part]))
    assert abs(np.corrcoef(tables["val"]["score"], measured["val"])[0, 1]) < 1e-6
    saved = SavedScores(tables["val"], tables["dev"], tables["test"],
                        np.zeros(len(split.test), dtype=int), split.test_classes.numpy(),
                        np.arange(len(split.test)))
    assert complexity.compare(saved, measured)["slope"] == pytest.approx(fitted.slope)
    some = {"score": raw["test"][:5]}
    with pytest.raises(ValueError, match="pass the test_indices it scored"):
        complexity.correct_tables(split, {"score": raw["val"]}, some)
    complexity.correct_tables(split, {"score": raw["val"]}, some, test_indices=np.arange(5))
