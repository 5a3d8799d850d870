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
    fixed = complexity.corrected_scores(saved, c)
    assert set(fixed) == {"val", "dev", "test"}
    np.testing.assert_allclose(fixed["val"], residual)
    with pytest.raises(ValueError, match="at least 2 validation normals"):
        complexity.Correction.fit([1.0], [2.0])


def test_for_scores_follows_the_test_images_a_method_scored():
    saved, c = _saved(np.random.default_rng(1), n=10)
    saved.test_indices = np.array([3, 1])
    assert complexity.for_scores(c, saved)["test"].tolist() == c["test"][[3, 1]].tolist()
