"""Latent mapping speed, measured side by side in one run.

    python benchmarks/bench_latent_mapping.py                       # random DCGAN, digits images
    python benchmarks/bench_latent_mapping.py --run runs/mnist0     # the run's GAN (+ encoder)

Maps `--images` test images (default 256) with `map_latent` at batch size 256, and a sample of
them (`--sample`) one image at a time (batch size 1), extrapolated per image; prints both rates,
their ratio and the largest relative score difference between the two (exactness). For context it
also times the textbook loop (G and D trainable, f(x) recomputed every step, BatchNorm unfolded)
one image at a time. With `--run DIR` (a run folder where 01 and 02 ran) the networks come from
its checkpoints and the three mappings (iterative, encoder, encoder+refine) are compared on the
same test images: images/s and AUROC.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

import anogan_guide as ag
from anogan_guide import anogan, fanogan, latent
from anogan_guide.runs import timed


def textbook_map(generator, discriminator, images, iterations, lr, lam, seed) -> torch.Tensor:
    """The mapping of public AnoGAN versions (here with eval mode and a fresh z per image):
    one image at a time, weights left trainable, f(x) recomputed at every step."""
    generator.eval()
    discriminator.eval()
    z0 = latent.initial_latents(len(images), generator.latent_dim, seed)
    scores = []
    for i in range(len(images)):
        x = images[i:i + 1]
        z = z0[i:i + 1].clone().requires_grad_(True)
        opt = torch.optim.Adam([z], lr=lr)
        for _ in range(iterations):
            gz = generator(z)
            loss = ((1 - lam) * (x - gz).abs().sum()
                    + lam * (discriminator.features(x) - discriminator.features(gz)).abs().sum())
            opt.zero_grad()
            loss.backward()
            opt.step()
        scores.append(loss.detach())
    return torch.stack(scores)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", default="", help="run folder with anogan checkpoints (optional)")
    p.add_argument("--gan-loss", default="bce", choices=anogan.GAN_LOSSES)
    p.add_argument("--images", type=int, default=256, help="test images mapped in one batch")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--sample", type=int, default=16, help="images mapped one at a time")
    p.add_argument("--iterations", type=int, default=400)
    p.add_argument("--lr", type=float, default=latent.MAP_LR)
    p.add_argument("--lam", type=float, default=latent.LAMBDA)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--no-textbook", action="store_true", help="skip the textbook-loop timing")
    args = p.parse_args(argv)
    os.environ.setdefault("ANOGAN_GUIDE_QUIET", "1")
    torch.set_num_threads(args.threads)
    dev = ag.pick_device(args.device)
    ag.seed_everything(0)

    encoder = None
    if args.run:
        run = ag.open_run(args.run)
        gan = anogan.load(run, dev, gan_loss=args.gan_loss)
        import json

        saved = json.loads(run.split_path.read_text())
        split = ag.load_one_class(saved["dataset"], saved["normal_class"],
                                  data_root=saved["data_root"], image_size=saved["image_size"],
                                  seed=saved["seed"], val_fraction=saved["val_fraction"])
        if run.checkpoint(anogan.encoder_method(args.gan_loss), "best").is_file():
            encoder = fanogan.load_encoder(run, dev, gan_loss=args.gan_loss)
    else:
        split = ag.load_one_class("digits", 0, image_size=args.image_size)
        gan = anogan.TrainedGAN(*anogan.build_gan(split.image_size, split.channels,
                                                  ag.AnoganConfig(), dev),
                                ag.AnoganConfig(), "anogan", 0, 0, 0.0)
        with torch.no_grad():  # non-trivial BatchNorm statistics, as after training
            gan.generator.train()(torch.randn(256, 100, device=dev))
        gan.generator.eval()
        gan.discriminator.eval()
    index = ag.subsample_test(split, args.images, seed=0)
    x = split.test.in_range(-1, 1).tensors()[index].to(dev)
    labels = split.test_labels[index]
    g, d = gan.generator, gan.discriminator
    kw = dict(iterations=args.iterations, lr=args.lr, lam=args.lam, seed=0, progress_bar=False)
    n, k = len(x), min(args.sample, len(x))
    device_name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else \
        f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {device_name}; {g.image_size}x{g.image_size}x{g.channels}, "
          f"{args.iterations} iterations, lr {args.lr}, lambda {args.lam}")

    ag.map_latent(g, d, x[:2], batch_size=2, **dict(kw, iterations=3))  # warm-up
    batched, t_batched = timed(lambda: ag.map_latent(g, d, x, batch_size=args.batch_size, **kw))
    single, t_single = timed(lambda: ag.map_latent(g, d, x[:k], batch_size=1, **kw))
    rate_b, rate_1 = n / t_batched, k / t_single
    rel = ((batched.score[:k] - single.score).abs() / single.score.abs()).max().item()
    print(f"map_latent batch {args.batch_size}: {n} images in {t_batched:.1f} s = "
          f"{rate_b:.2f} images/s")
    print(f"map_latent batch 1:   {k} images in {t_single:.1f} s = {rate_1:.2f} images/s "
          f"(extrapolated to {n}: {n / rate_1:.0f} s)")
    print(f"speed-up batched vs one at a time: {rate_b / rate_1:.1f}x")
    print(f"largest relative score difference batch {args.batch_size} vs 1: {rel:.2e}")
    if not args.no_textbook:
        _, t_text = timed(lambda: textbook_map(g, d, x[:k], args.iterations, args.lr, args.lam, 0))
        print(f"textbook loop, one at a time: {k / t_text:.2f} images/s; batched map_latent is "
              f"{rate_b / (k / t_text):.1f}x faster")

    if encoder is not None:
        print("\n| mapping | AUROC | images/s | speed-up vs search |\n|---|---|---|---|")
        rows = {"iterative": (batched, t_batched)}
        for kind in ("encoder", "encoder+refine"):
            rows[kind] = timed(lambda kind=kind: latent.map_images(
                encoder, x, mapping=kind, batch_size=args.batch_size, **kw))
        from anogan_guide.evaluate import metrics

        for kind, (result, seconds) in rows.items():
            auroc = metrics(result.score, labels, 0.0)["auroc"]
            print(f"| {kind} | {auroc:.3f} | {n / seconds:.1f} | {t_batched / seconds:.0f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
