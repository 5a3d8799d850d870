"""The GANomaly-GradCon hybrid: L_grad trains, references and combination are saved, resume,
exact per-image gradient terms, a combination fitted on validation normals only."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import anogan_guide as ag
from anogan_guide import fusion
from anogan_guide import hybrid as hy

TINY = dict(batch_size=32, width=8, latent_dim=16, lr=1e-3, min_steps_per_epoch=0)


@pytest.fixture(scope="module")
def split():
    return ag.load_one_class("digits", 0, image_size=16)


def tiny_config(**kwargs) -> hy.HybridConfig:
    return hy.HybridConfig(**{"epochs": 1, **TINY, **kwargs})


def state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _steps(beta: float, x: torch.Tensor, n: int = 3) -> tuple[dict, dict]:
    """n hybrid steps from the same seeded start; the generator's weights and references."""
    config = tiny_config(beta=beta)
    g, d = ag.ganomaly.build_models(16, 1, config)
    opt_g = torch.optim.Adam(g.parameters(), lr=1e-3, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), lr=1e-3, betas=(0.5, 0.999))
    params = dict(g.named_parameters())
    reference = {n: torch.zeros_like(params[n]) for n in hy.gradient_layers(g)}
    steps = torch.zeros((), dtype=torch.long)
    history = []
    for i in range(n):
        losses = hy.hybrid_step(g, d, opt_g, opt_d, x[i * 16:(i + 1) * 16], reference, steps,
                                config)
        history.append(state(g))
        assert int(steps) == i + 1
        if i == 0:
            assert float(losses["l_grad"]) == 0.0  # no reference yet at the first step
        elif beta:
            assert -1.0 <= float(losses["l_grad"]) < 0.0
    return history, reference


def test_gradient_loss_changes_training():
    torch.manual_seed(0)
    x = torch.rand(48, 1, 16, 16) * 2 - 1
    without, ref0 = _steps(0.0, x)
    with_, ref1 = _steps(0.5, x)
    # step one has no reference, so L_grad = 0 and both runs agree exactly ...
    for k in without[0]:
        assert torch.equal(without[0][k], with_[0][k]), k
    # ... afterwards the differentiable L_grad moves the weights (a detached `.item()` would not)
    later = [k for k in without[-1] if not torch.equal(without[-1][k], with_[-1][k])]
    assert any(k.startswith("decoder.") for k in later)
    assert any(k.startswith("encoder1.") for k in later)  # dMSE/dW depends on z = E1(x) too
    # the references are running means of dMSE/dW, gathered with or without the term
    assert set(ref0) == {"decoder.net.0.weight", "decoder.net.3.weight", "decoder.net.6.weight"}
    assert all(r.abs().sum() > 0 for r in ref0.values())


def z_score(trained, table):
    val = {t: (table[t] - table[t].mean()) / table[t].std(unbiased=False) for t in table}
    return val["l_enc"] + 0.25 * val["l_grad"]


def test_training_saves_references_and_combination(split, tmp_path):
    run = ag.open_run(tmp_path)
    trained = hy.train(split, tiny_config(epochs=2), run)
    assert trained.best_epoch in (1, 2)
    checkpoint = ag.runs.read_checkpoint(run.checkpoint("hybrid", "best"))
    refs = {k for k in checkpoint["extra"] if k.startswith("ref/")}
    assert refs == {"ref/" + n for n in trained.reference}
    assert int(checkpoint["extra"]["ref_steps"]) == 2 * 3  # 2 epochs x 3 batches of 32
    # the default score, chosen on the development split: z(l_enc) + 0.25 z(l_grad)
    assert trained.combination.terms == ("l_enc", "l_grad")
    assert trained.combination.weights == (1.0, 0.25)
    reloaded = hy.load(run)
    for k, v in trained.reference.items():
        assert torch.equal(v, reloaded.reference[k])
    assert reloaded.combination == trained.combination
    a, b = hy.score(trained, split.val), hy.score(reloaded, split.val)
    torch.testing.assert_close(a["score"], b["score"])
    assert list(a)[:4] == list(hy.TERMS) and list(a)[-1] == "score" and "gradcon" in a
    torch.testing.assert_close(a["score"], z_score(trained, a))
    # standardised with the validation normals' own statistics: mean 0, std 1 there
    z = trained.combination.standardized(a)
    for t in ("l_enc", "l_grad"):
        assert abs(float(z[t].mean())) < 1e-4 and abs(float(z[t].std(unbiased=False)) - 1) < 1e-3
    assert "val_l_grad" in trained.epoch_history and "l_grad" in trained.history


def test_per_image_gradient_term_is_exact_and_batch_independent(split, tmp_path):
    trained = hy.train(split, tiny_config(epochs=1), ag.open_run(tmp_path))
    x = split.val.in_range(-1, 1).tensors()[:6]
    table = hy.score(trained, x, batch_size=4)
    alone = hy.score(trained, x[2:3], batch_size=4)
    for k in table:  # eval mode: an image's terms do not depend on its batch
        torch.testing.assert_close(alone[k], table[k][2:3], rtol=1e-4, atol=1e-6)
    g = trained.generator.eval()
    params = dict(g.named_parameters())
    for i in range(len(x)):  # plain autograd, one image at a time
        xi = x[i:i + 1]
        mse = F.mse_loss(g(xi)[0], xi)
        grads = torch.autograd.grad(mse, [params[n] for n in trained.reference])
        cos = torch.stack([F.cosine_similarity(gr.flatten(), r.flatten(), dim=0)
                           for gr, r in zip(grads, trained.reference.values(), strict=True)])
        torch.testing.assert_close(table["l_grad"][i], -cos.mean(), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(table["mse"][i], mse.detach(), rtol=1e-5, atol=1e-7)
    assert g.training is False


def test_resume_after_interruption_gives_identical_weights(split, train_interrupted_and_straight):
    straight, interrupted, resumed = train_interrupted_and_straight(
        hy, split, tiny_config(epochs=3))
    a, b = hy.load(straight, which="last"), hy.load(interrupted, which="last")
    assert a.epoch == b.epoch == 3
    for x, y in ((a.generator, b.generator), (a.discriminator, b.discriminator)):
        sx, sy = state(x), state(y)
        assert all(torch.equal(sx[k], sy[k]) for k in sx)
    for k in a.reference:
        assert torch.equal(a.reference[k], b.reference[k]), k
    assert a.combination == b.combination
    assert resumed.epoch_history["val_loss"] == a.epoch_history["val_loss"]


def test_combination_weights_from_validation():
    rng = np.random.default_rng(0)
    base = rng.normal(size=2000)
    val = {"a": torch.tensor(base + 0.1 * rng.normal(size=2000)),
           "b": torch.tensor(base + 0.1 * rng.normal(size=2000)),  # nearly a copy of a
           "c": torch.tensor(5 + 3 * rng.normal(size=2000))}  # independent
    equal = fusion.fit_combination(val, ("a", "b", "c"), "equal")
    assert equal.weights == pytest.approx((1 / 3,) * 3)
    mv = fusion.fit_combination(val, ("a", "b", "c"), "min_variance")
    w = np.array(mv.weights)
    assert (w >= 0).all() and w.sum() == pytest.approx(1)
    # the redundant pair shares the weight that the independent term gets alone
    assert w[0] + w[1] == pytest.approx(w[2], abs=0.05)
    assert float(mv(val).var()) < float(equal(val).var())
    assert float(equal.standardized(val)["c"].mean()) == pytest.approx(0, abs=1e-6)
    largest = fusion.fit_combination(val, ("a", "b", "c"), "max")
    z = largest.standardized(val)
    torch.testing.assert_close(largest(val), torch.stack([z["a"], z["b"], z["c"]]).amax(0))
    assert fusion.Combination.from_tensors(largest.to_tensors(), ("a", "b", "c")) == largest
    assert fusion.Combination.from_tensors(mv.to_tensors(), ("a", "b", "c")) == mv
    with pytest.raises(ValueError, match="weighting"):
        fusion.fit_combination(val, ("a",), "test_auroc")
    with pytest.raises(ValueError, match="lacks"):
        fusion.fit_combination(val, ("a", "l_grad"))


def test_pseudo_anomalies_and_the_choice_they_make():
    x = torch.arange(2 * 3 * 3, dtype=torch.float32).reshape(2, 1, 3, 3)
    pseudo = fusion.pseudo_anomalies(x)
    assert pseudo.shape == (10, 1, 3, 3)
    torch.testing.assert_close(pseudo[0, 0], x[0, 0].rot90(1))  # turned 90 degrees
    torch.testing.assert_close(pseudo[8, 0], x[0, 0].flip(0))  # upside-down
    with pytest.raises(ValueError, match="square"):
        fusion.pseudo_anomalies(torch.zeros(2, 1, 3, 4))
    # term a rises for the pseudo-anomalies, b does not, c falls: "a alone" separates best
    rng = np.random.default_rng(1)
    val = {t: torch.tensor(rng.normal(size=300)) for t in "abc"}
    shifted = {"a": 2.0, "b": 0.0, "c": -2.0}
    pseudo_table = {t: torch.tensor(rng.normal(size=500) + shifted[t]) for t in "abc"}
    chosen = fusion.fit_combination(val, ("a", "b", "c"), "pseudo", pseudo_table)
    assert chosen.weights == (1.0, 0.0, 0.0) and chosen.rule == "sum"
    assert chosen.describe() == "1.000*z(a)"
    assert set(fusion.candidate_combinations(val, ("a", "b", "c"))) == {
        "a alone", "b alone", "c alone", "equal", "min_variance", "max"}
    # when two terms rise together, their sum separates better than either alone
    pseudo_table["b"] = pseudo_table["b"] + 2.0
    assert fusion.fit_combination(val, ("a", "b"), "pseudo", pseudo_table).weights == (0.5, 0.5)
    with pytest.raises(ValueError, match="pseudo_table"):
        fusion.fit_combination(val, ("a", "b"), "pseudo")


def test_config_errors():
    with pytest.raises(ValueError, match="weighting"):
        hy.HybridConfig(weighting="best")
    with pytest.raises(ValueError, match="select"):
        hy.HybridConfig(select="test_auroc")


def test_cluster_agreement_and_ablation():
    rng = np.random.default_rng(0)
    classes = np.repeat(np.arange(3), 50)
    features = rng.normal(size=(150, 4)) * 0.1 + np.eye(4)[classes] * 5
    ari, clusters = hy.cluster_agreement(features, classes)
    assert ari == pytest.approx(1.0) and clusters.shape == (150,)
    labels = np.r_[np.zeros(100), np.ones(100)]
    candidates = hy.candidate_scores()
    dev = {t: torch.randn(100) + 3 * (t == "l_con") for t in hy.SCORE_TERMS}
    val = {t: torch.randn(200) for t in hy.SCORE_TERMS}
    test = {t: torch.randn(200) + 3 * torch.tensor(labels) * (t == "l_con") for t in hy.SCORE_TERMS}
    rows = {r["score"]: r for r in fusion.ablation(val, test, labels, candidates, dev_table=dev)}
    assert rows["l_con alone"]["auroc"] > 0.95 and 0.3 < rows["l_enc alone"]["auroc"] < 0.7
    assert rows["l_con alone"]["dev_auroc"] > 0.95
    assert "all four terms (equal)" in rows and "all four terms (pseudo)" not in rows
    text = fusion.ablation_markdown(fusion.ablation(val, test, labels, candidates))
    assert "| score | weights (fitted on validation normals) | dev AUROC | test AUROC |" in text
    assert "| l_con alone |  | – |" in text


def test_fixed_weights_are_given_not_fitted_and_checked():
    val = {"l_enc": torch.randn(300) * 2 + 5, "l_grad": torch.randn(300) * 0.1}
    comb = fusion.fit_combination(val, ("l_enc", "l_grad"), "fixed", weights=(1.0, 0.25))
    assert comb.weights == (1.0, 0.25) and comb.describe() == "1.000*z(l_enc) + 0.250*z(l_grad)"
    z = comb.standardized(val)
    torch.testing.assert_close(comb(val), z["l_enc"] + 0.25 * z["l_grad"])
    with pytest.raises(ValueError, match="one weight per term"):
        fusion.fit_combination(val, ("l_enc", "l_grad"), "fixed", weights=(1.0,))
    with pytest.raises(ValueError, match="score_weights with one number per score term"):
        hy.HybridConfig(score_terms="l_enc,l_con,l_grad")  # the default weights are for two
    with pytest.raises(ValueError, match="score_terms='l_enc,l_foo'"):
        hy.HybridConfig(score_terms="l_enc,l_foo")
    config = hy.HybridConfig(weighting="fixed", score_terms="l_enc, l_grad", score_weights="1,0.25")
    assert config.terms == ("l_enc", "l_grad") and config.weights == (1.0, 0.25)
    assert "l_enc + 0.25 l_grad (fixed)" in hy.candidate_scores()


def test_rotation_head_joins_the_hybrid(split, tmp_path):
    run = ag.open_run(tmp_path / "rot")
    config = tiny_config(epochs=2, w_rot=1.0, w_rot_g=0.2, score_terms="l_enc,l_grad,l_rot",
                         score_weights="1,0.25,1")
    trained = hy.train(split, config, run)
    assert trained.discriminator.has_rotation_head
    assert {"d_rot", "acc_rot", "g_rot"} <= set(trained.history)
    assert "val_l_rot" in trained.epoch_history
    table = hy.score(trained, split.test)
    assert {"l_rot", "acc_rot", "l_grad", "l_enc"} <= set(table)
    assert trained.combination.terms == ("l_enc", "l_grad", "l_rot")
    torch.testing.assert_close(table["score"], trained.combination(table))
    reloaded = hy.load(run)
    assert torch.equal(hy.score(reloaded, split.test)["score"], table["score"])


def test_without_the_head_the_hybrid_checkpoint_is_as_before(split, tmp_path):
    run = ag.open_run(tmp_path)
    trained = hy.train(split, tiny_config(), run)
    assert not trained.discriminator.has_rotation_head
    saved = ag.runs.read_checkpoint(run.checkpoint("hybrid", "last"))["config"]
    assert not set(saved) & set(ag.ganomaly.ROTATION_KEYS)  # older checkpoints lack them
    assert {"score_terms", "weighting", "score_weights"} <= set(saved)  # these they have
    assert "l_rot" not in hy.score(trained, split.val)
    with pytest.raises(ValueError, match="w_rot=0 trains no head"):
        tiny_config(score_terms="l_enc,l_rot", score_weights="1,1")
