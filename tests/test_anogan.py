"""AnoGAN: batched latent mapping (exactness, freezing), GAN training (resume, non-finite guard,
wgan-gp), reloading, and the f-AnoGAN encoder. Tiny: digits at 16x16, a few steps."""

from __future__ import annotations

import pytest
import torch

import anogan_guide as ag
from anogan_guide import anogan, fanogan, latent
from anogan_guide.training import NonFiniteLossError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def split():
    return ag.load_one_class("digits", 0, image_size=16, seed=0)


def _gan(image_size: int = 16, wgan: bool = False, seed: int = 0):
    """A G and D with non-trivial BatchNorm statistics (as after training)."""
    torch.manual_seed(seed)
    g, d = ag.Generator(100, image_size, 1), ag.Discriminator(image_size, 1, wgan=wgan)
    with torch.no_grad():
        for _ in range(3):
            g(torch.randn(16, 100))
            d(torch.rand(16, 1, image_size, image_size) * 2 - 1)
    return g, d


def _images(n: int, image_size: int = 16, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 1, image_size, image_size, generator=torch.Generator().manual_seed(seed)) \
        * 2 - 1


def _naive_scores(g, d, x, z0, iterations, lr, lam):
    """The textbook mapping, one image at a time, G and D in eval mode: the reference."""
    g, d = g.eval(), d.eval()
    out = []
    for i in range(len(x)):
        xi = x[i:i + 1]
        z = z0[i:i + 1].clone().requires_grad_(True)
        opt = torch.optim.Adam([z], lr=lr)

        def loss_of(z, xi=xi):
            gz = g(z)
            return ((1 - lam) * (xi - gz).abs().sum()
                    + lam * (d.features(xi) - d.features(gz)).abs().sum())

        for _ in range(iterations):
            opt.zero_grad()
            loss_of(z).backward()
            opt.step()
        with torch.no_grad():
            out.append(loss_of(z))
    return torch.stack(out)


def test_batched_mapping_equals_one_image_at_a_time():
    g, d = _gan()
    x = _images(12)
    kwargs = dict(iterations=40, lr=0.01, lam=0.1, seed=3, progress_bar=False)
    big = ag.map_latent(g, d, x, batch_size=256, **kwargs)
    one = ag.map_latent(g, d, x, batch_size=1, **kwargs)
    odd = ag.map_latent(g, d, x, batch_size=5, **kwargs)
    for other in (one, odd):
        rel = ((big.score - other.score).abs() / other.score.abs()).max()
        assert rel < 1e-4
        assert torch.allclose(big.z, other.z, atol=1e-4)
    assert big.z.shape == (12, 100) and big.score.shape == (12,)
    assert big.residual.shape == big.discrimination.shape == (12,)
    # the rows of a sample (02 compares the encoder, which scores every test image, with the
    # search on its sample)
    part = big.subset(torch.tensor([7, 2]))
    assert torch.equal(part.z, big.z[[7, 2]]) and torch.equal(part.score, big.score[[7, 2]])
    assert part.table().keys() == big.table().keys() and part.lam == big.lam


def test_mapping_matches_the_textbook_loop():
    g, d = _gan()
    x = _images(4)
    z0 = latent.initial_latents(4, 100, seed=0)
    ref = _naive_scores(g, d, x, z0, iterations=25, lr=0.01, lam=0.3)
    got = ag.map_latent(g, d, x, iterations=25, lr=0.01, lam=0.3, seed=0, progress_bar=False)
    assert torch.allclose(got.score, ref, rtol=1e-4)
    assert torch.allclose(got.score, latent.combine(got.residual, got.discrimination, 0.3))


def test_start_z_depends_on_seed_and_position_only():
    g, d = _gan()
    x = _images(6)
    a = ag.map_latent(g, d, x, iterations=0, seed=5, batch_size=4, progress_bar=False)
    b = ag.map_latent(g, d, x[:3], iterations=0, seed=5, batch_size=1, progress_bar=False)
    c = ag.map_latent(g, d, x, iterations=0, seed=6, progress_bar=False)
    assert torch.equal(a.z[:3], b.z)
    assert torch.equal(a.z, latent.initial_latents(6, 100, 5))
    assert not torch.equal(a.z, c.z)
    # iterations=0 scores the start z itself, with G and D in eval mode
    g.eval()
    d.eval()
    with torch.no_grad():
        gz = g(a.z)
        res = (x - gz).abs().flatten(1).sum(1)
    assert torch.allclose(a.residual, res, rtol=1e-5)


def test_mapping_leaves_the_networks_untouched():
    g, d = _gan()
    g.train()
    d.train()
    before = {k: v.clone() for k, v in {**g.state_dict(), **{
        "d." + k: v for k, v in d.state_dict().items()}}.items()}
    result = ag.map_latent(g, d, _images(3), iterations=5, progress_bar=False)
    after = {**g.state_dict(), **{"d." + k: v for k, v in d.state_dict().items()}}
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN stats did not move
    assert g.training and d.training  # the caller's modes are kept
    assert all(p.grad is None for p in [*g.parameters(), *d.parameters()])
    assert result.z.requires_grad is False


def test_mapping_reduces_the_loss_and_works_without_batchnorm():
    g, d = _gan(wgan=True)
    x = _images(5)
    start = ag.map_latent(g, d, x, iterations=0, progress_bar=False)
    end = ag.map_latent(g, d, x, iterations=30, lr=0.05, progress_bar=False)
    assert (end.score < start.score).all()


def test_mapping_rejects_bad_input():
    g, d = _gan()
    with pytest.raises(ValueError, match="lam"):
        ag.map_latent(g, d, _images(2), lam=1.5)
    with pytest.raises(TypeError, match="tensor"):
        ag.map_latent(g, d, _images(2)[0])
    with pytest.raises(ValueError, match="z0"):
        ag.map_latent(g, d, _images(2), z0=torch.zeros(3, 100))


def _config(**kw) -> ag.AnoganConfig:
    base = dict(epochs=2, batch_size=32, val_images=8, val_iterations=3, seed=0)
    return ag.AnoganConfig(**(base | kw))


def _weights(trained) -> dict[str, torch.Tensor]:
    return {**{"g." + k: v for k, v in trained.generator.state_dict().items()},
            **{"d." + k: v for k, v in trained.discriminator.state_dict().items()}}


@pytest.mark.parametrize("gan_loss", ["bce", "wgan-gp"])
def test_kill_and_resume_gives_the_same_weights(split, tmp_path, monkeypatch, gan_loss):
    full = anogan.train(split, _config(gan_loss=gan_loss), ag.open_run(tmp_path / "a"), "cpu")
    run = ag.open_run(tmp_path / "b")
    calls = {"n": 0}
    original = anogan.TrainingLoop.record

    def killed(self, step, **losses):
        calls["n"] += 1
        if self.epoch == 1 and step == 1:  # in the middle of the second epoch
            raise KeyboardInterrupt
        return original(self, step, **losses)

    monkeypatch.setattr(anogan.TrainingLoop, "record", killed)
    with pytest.raises(KeyboardInterrupt):
        anogan.train(split, _config(gan_loss=gan_loss), run, "cpu")
    monkeypatch.setattr(anogan.TrainingLoop, "record", original)
    assert anogan.load(run, which="last", gan_loss=gan_loss).epoch == 1  # lost only epoch 2
    resumed = anogan.train(split, _config(gan_loss=gan_loss, resume=True), run, "cpu")
    a, b = _weights(full), _weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.history == full.history


def test_non_finite_loss_stops_with_epoch_and_step(split, tmp_path, monkeypatch):
    run = ag.open_run(tmp_path)
    anogan.train(split, _config(epochs=1), run, "cpu")
    original = ag.Generator.forward
    monkeypatch.setattr(ag.Generator, "forward", lambda self, z: original(self, z) * float("nan"))
    with pytest.raises(NonFiniteLossError, match=r"epoch 2, step 1"):
        anogan.train(split, _config(epochs=2, resume=True), run, "cpu")
    assert anogan.load(run, which="last").epoch == 1  # the last good checkpoint stays


def test_train_writes_checkpoints_images_and_reloads(split, tmp_path):
    run = ag.open_run(tmp_path)
    trained = anogan.train(split, _config(epochs=1), run, "cpu")
    assert run.checkpoint("anogan", "last").is_file()
    assert run.checkpoint("anogan", "best").is_file()
    assert (run.train_img / "anogan_epoch001.png").is_file()
    assert set(trained.history) >= {"loss_d", "loss_g"}
    assert len(trained.epoch_history["val_loss"]) == 1
    loaded = anogan.load(run, which="last")
    assert not loaded.generator.training and not loaded.discriminator.training
    a, b = _weights(trained), _weights(loaded)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert loaded.config.gan_loss == "bce" and loaded.method == "anogan"
    with pytest.raises(Exception, match="anogan-wgangp"):
        anogan.load(run, gan_loss="wgan-gp")


def test_wgan_gp_critic_has_no_batchnorm(split, tmp_path):
    run = ag.open_run(tmp_path)
    trained = anogan.train(split, _config(epochs=2, gan_loss="wgan-gp", n_critic=3), run, "cpu")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in trained.discriminator.modules())
    assert run.checkpoint("anogan-wgangp", "last").is_file()
    # 2 epochs x 4 batches = 8 critic steps: a generator step after the 3rd and the 6th
    assert len(trained.history["loss_d"]) == 8 and len(trained.history["loss_g"]) == 2
    assert "gp" in trained.history
    assert trained.config.betas == (0.5, 0.9) and trained.config.learning_rate == 1e-4


def test_config_rejects_unknown_loss():
    with pytest.raises(ValueError, match="gan_loss"):
        ag.AnoganConfig(gan_loss="hinge")


def test_encoder_mappings(split, tmp_path):
    run = ag.open_run(tmp_path)
    gan = anogan.train(split, _config(epochs=1, val_iterations=0), run, "cpu")
    enc = fanogan.train_encoder(split, gan, ag.FanoganConfig(epochs=2, batch_size=32), run, "cpu")
    assert run.checkpoint("fanogan", "best").is_file()
    loaded = fanogan.load_encoder(run, which="last")
    assert torch.equal(loaded.encoder.state_dict()["net.head.weight"],
                       enc.encoder.state_dict()["net.head.weight"])
    x = split.test.in_range(-1, 1).tensors()[:10]
    fast = latent.map_images(loaded, x, mapping="encoder", progress_bar=False)
    refined = latent.map_images(loaded, x, mapping="encoder+refine", refine_iterations=20,
                                lr=0.05, progress_bar=False)
    assert torch.allclose(fast.z, latent.encode(loaded.encoder, x))
    assert refined.score.mean() < fast.score.mean()
    table = latent.score(loaded, split.test, mapping="encoder", progress_bar=False)
    assert set(table) == {"residual", "discrimination", "score"}
    assert len(table["score"]) == len(split.test)
    with pytest.raises(ValueError, match="encoder"):
        latent.map_images(gan, x, mapping="encoder")
    with pytest.raises(ValueError, match="mapping"):
        latent.map_images(gan, x, mapping="magic")
