"""GradCon scoring: batched vs one image at a time, side by side in one run; and its memory.

    python benchmarks/bench_gradcon_scoring.py                     # MNIST from ../shared/data
    python benchmarks/bench_gradcon_scoring.py --run runs/mnist0   # that run's trained GradCon

Speed: scores `--images` test images (default 1024, stratified by class) with
`gradcon_scores(..., batch_size=1)` (one backward pass per image, the official way),
with a plain autograd loop written here as the official code does it, with the straightforward
torch.func vectorisation (vmap over per-image gradients), and with `gradcon_scores(...,
batch_size=256)`; best of `--repeats` interleaved rounds. Prints images/s, the ratios and the
largest difference between the batched and the one-at-a-time scores.
Memory: in fresh subprocesses, the peak resident memory (VmHWM) of scoring the whole test set
(10,000 images) and the test set twice (20,000), with the peak reset right before scoring, and
the process's peak over its whole life.

Without `--run` the model is a GradConAE trained for `--train-steps` steps on the normal class
(scoring cost does not depend on how well it is trained).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import anogan_guide as ag
from anogan_guide import gradcon, gradscore
from anogan_guide.runs import REPO_ROOT

DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data"


def official_loop(model, reference, images, grad_weight=0.12) -> torch.Tensor:
    """The official GradCon test loop: batch size 1, a backward pass per image."""
    weights = [dict(model.named_parameters())[n] for n in reference]
    scores = []
    for i in range(len(images)):
        x = images[i:i + 1]
        mse = F.mse_loss(model(x), x)
        grads = torch.autograd.grad(mse, weights)
        cos = torch.stack([F.cosine_similarity(g.reshape(-1, 1), r.reshape(-1, 1), dim=0)[0]
                           for g, r in zip(grads, reference.values(), strict=True)])
        scores.append(mse.detach() - grad_weight * cos.mean())
    return torch.stack(scores)


def vmap_scores(model, reference, images, batch_size=256, grad_weight=0.12) -> torch.Tensor:
    """The straightforward vectorisation: materialise every per-image gradient with
    torch.func (functional_call + vmap + grad), then the cosines."""
    out = []
    for x in images.split(batch_size):
        grads = gradscore.per_image_gradients(model, list(reference), x)
        with torch.no_grad():
            mse = (model(x) - x).pow(2).flatten(1).mean(1)
        cos = torch.stack([F.cosine_similarity(grads[n].flatten(1), r.reshape(1, -1), dim=1)
                           for n, r in reference.items()], 1)
        out.append(mse - grad_weight * cos.mean(1))
    return torch.cat(out)


def vm_hwm_mb() -> float:
    """This process's peak resident memory (VmHWM) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def vm_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status (Linux only)")


def reset_peak() -> None:
    """Reset VmHWM to the current RSS (Linux: write 5 to /proc/self/clear_refs)."""
    Path("/proc/self/clear_refs").write_text("5")


def load_model(args, split) -> tuple[ag.GradConAE, dict]:
    if args.run:
        trained = gradcon.load(ag.open_run(args.run), "cpu", which="best")
        return trained.model, trained.reference
    ag.seed_everything(0)
    model = ag.GradConAE(split.image_size, split.channels)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    params = dict(model.named_parameters())
    reference = {n: torch.zeros_like(params[n]) for n in model.gradient_layers()}
    steps = torch.zeros((), dtype=torch.long)
    train = split.train.tensors()
    for i in range(args.train_steps):
        start = (i * 64) % (len(train) - 64)
        gradcon.gradcon_step(model, opt, train[start:start + 64], reference, steps, beta=0.03)
    return model.eval(), reference


def memory_child(args) -> None:
    """Subprocess: score the test set `args.memory_child` times over; print JSON."""
    torch.set_num_threads(args.threads)
    split = ag.load_one_class(args.dataset, args.normal_class, data_root=args.data_root,
                              image_size=args.image_size)
    saved = torch.load(args.model_file, weights_only=True)
    model = ag.GradConAE(split.image_size, split.channels)
    model.load_state_dict(saved["model"])
    model.eval()
    reference = saved["reference"]
    repeats = args.memory_child
    images = ag.ImageSet(torch.cat([split.test.images] * repeats),
                         torch.cat([split.test.labels] * repeats))
    rss_before = vm_rss_mb()
    peak_life_before = vm_hwm_mb()
    reset_peak()
    start = time.perf_counter()
    if args.vmap:
        x = images.tensors()
        scores = vmap_scores(model, reference, x, batch_size=args.batch_size)
    else:
        scores = ag.gradcon_scores(model, reference, images, batch_size=args.batch_size)
    seconds = time.perf_counter() - start
    print(json.dumps({"images": len(scores), "rss_before_mb": rss_before,
                      "peak_while_scoring_mb": vm_hwm_mb(),
                      "peak_before_scoring_mb": peak_life_before, "seconds": seconds}))


def run_child(args, model_file: str, repeats: int, vmap: bool = False) -> dict:
    cmd = [sys.executable, __file__, "--memory-child", str(repeats), "--model-file", model_file,
           "--dataset", args.dataset, "--normal-class", str(args.normal_class),
           "--image-size", str(args.image_size), "--batch-size", str(args.batch_size),
           "--threads", str(args.threads)]
    if args.data_root:
        cmd += ["--data-root", str(args.data_root)]
    if vmap:
        cmd.append("--vmap")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True,
                         env={**os.environ, "ANOGAN_GUIDE_QUIET": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--data-root", default=str(DEFAULT_DATA) if DEFAULT_DATA.is_dir() else None)
    p.add_argument("--normal-class", default=0)
    p.add_argument("--image-size", type=int, default=28)
    p.add_argument("--run", default="", help="run folder with a trained gradcon (optional)")
    p.add_argument("--train-steps", type=int, default=30)
    p.add_argument("--images", type=int, default=1024)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--skip-vmap", action="store_true")
    p.add_argument("--memory-child", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--model-file", default="", help=argparse.SUPPRESS)
    p.add_argument("--vmap", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.memory_child:
        memory_child(args)
        return 0

    os.environ.setdefault("ANOGAN_GUIDE_QUIET", "1")
    torch.set_num_threads(args.threads)
    split = ag.load_one_class(args.dataset, args.normal_class, data_root=args.data_root,
                              image_size=args.image_size)
    model, reference = load_model(args, split)
    idx = ag.subsample_test(split, args.images, seed=0)
    x = split.test.tensors()[idx]
    n = len(x)
    print(f"GradCon scoring on {n} {args.dataset} test images ({args.image_size}x"
          f"{args.image_size}), {torch.get_num_threads()} threads, torch {torch.__version__}")
    print("command:", " ".join([Path(sys.executable).name, *sys.argv]))

    ways = {
        "gradcon_scores batch_size=1 (official way)":
            lambda: ag.gradcon_scores(model, reference, x, batch_size=1),
        "plain official loop (this script)": lambda: official_loop(model, reference, x),
        f"torch.func vmap(grad), batch {args.batch_size}":
            lambda: vmap_scores(model, reference, x, batch_size=args.batch_size),
        f"gradcon_scores batch_size={args.batch_size}":
            lambda: ag.gradcon_scores(model, reference, x, batch_size=args.batch_size),
    }
    if args.skip_vmap:
        ways = {k: v for k, v in ways.items() if "vmap" not in k}
    best = {k: float("inf") for k in ways}
    results = {}
    for _ in range(args.repeats):  # interleaved rounds: background load hits every way alike
        for name, fn in ways.items():
            start = time.perf_counter()
            results[name] = fn()
            best[name] = min(best[name], time.perf_counter() - start)
    base = best["gradcon_scores batch_size=1 (official way)"]
    print(f"\n{'way':48s} {'seconds':>8s} {'images/s':>9s} {'vs one at a time':>17s}")
    for name, seconds in best.items():
        print(f"{name:48s} {seconds:8.3f} {n / seconds:9.0f} {base / seconds:16.2f}x")
    one = results["gradcon_scores batch_size=1 (official way)"]
    batched = results[f"gradcon_scores batch_size={args.batch_size}"]
    diff = (batched - one).abs()
    print(f"\nexactness: max |batched - one at a time| = {diff.max():.2e}; relative to the "
          f"scores' scale {diff.max() / one.abs().max():.2e}; elementwise relative (|score| > "
          f"5e-3) {(diff / one.abs())[one.abs() > 5e-3].max():.2e}")
    loop_diff = (results["plain official loop (this script)"] - one).abs().max()
    print(f"           max |plain loop - gradcon_scores(batch_size=1)| = {loop_diff:.2e}")

    if not args.skip_memory:
        with tempfile.TemporaryDirectory() as tmp:
            model_file = str(Path(tmp) / "model.pt")
            torch.save({"model": model.state_dict(), "reference": reference}, model_file)
            rows = [("gradcon_scores", 1, False), ("gradcon_scores", 2, False)]
            if not args.skip_vmap:
                rows.append(("torch.func vmap(grad)", 1, True))
            print(f"\nmemory (fresh subprocess each; batch {args.batch_size}; MB):")
            print(f"{'way':24s} {'images':>7s} {'RSS before':>11s} {'peak scoring':>13s} "
                  f"{'peak before':>12s} {'seconds':>8s}")
            peaks = {}
            for name, repeats, vmap in rows:
                r = run_child(args, model_file, repeats, vmap)
                peaks[(name, repeats)] = r["peak_while_scoring_mb"]
                print(f"{name:24s} {r['images']:7d} {r['rss_before_mb']:11.0f} "
                      f"{r['peak_while_scoring_mb']:13.0f} {r['peak_before_scoring_mb']:12.0f} "
                      f"{r['seconds']:8.1f}")
            added = peaks[("gradcon_scores", 2)] - peaks[("gradcon_scores", 1)]
            print(f"scoring the test set twice instead of once adds {added:.0f} MB of peak "
                  f"memory (the doubled uint8 test set itself is "
                  f"{split.test.images.numel() / 2**20:.0f} MB of it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
