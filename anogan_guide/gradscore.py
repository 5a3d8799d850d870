"""GradCon's per-image scoring terms: each image's MSE and the cosines between its decoder
weight gradients dMSE_i/dW and the trained reference gradients (GradCon and the hybrid use it).

Anomaly score = MSE_i - grad_weight * mean_W cos(dMSE_i/dW, ref_W) for each image i (the paper's
normality score negated, so higher = more anomalous).

The official code scores one image at a time with a backward pass each. Here a batch costs one
forward and one backward pass to the decoder's layer outputs, plus a per-layer contraction:
for a transposed convolution y = convT(a, W), the per-image weight gradient is
g_i = A_i^T @ U_i, with A_i the layer input (positions x C_in) and U_i the patches of
dMSE_i/dy_i taken as the adjoint convolution sees them (positions x k*k*C_out). Then
<g_i, r> and |g_i| come either from g_i itself (layers with many positions and small weights) or,
without materialising g_i, as <dy_i, convT(a_i, r)> and |g_i|^2 = <A_i A_i^T, U_i U_i^T>
(the "ghost norm" of differentially private training; layers with few positions).
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .data import image_batches
from .nets import eval_mode

EPS = 1e-12  # guards a cosine's denominator against an all-zero gradient
TRIM_EVERY = 2048  # images scored between two releases of freed heap memory (~12 ms each)
# the score's weight of the mean gradient cosine: 0.03, chosen on the development split over digits,
# MNIST and CIFAR-10 (docs/defaults.md); the paper's is 0.12
GRAD_WEIGHT = 0.03

ScoreTable = dict[str, torch.Tensor]


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None where there is none (macOS, Windows, musl)."""
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def _release_free_memory() -> None:
    """Hand freed heap memory back to the system. The per-batch temporaries (tens of MB, freed
    every batch) otherwise fragment glibc's heap and the resident size creeps up with the number
    of batches scored; trimming keeps it flat (measured: 20,000 images peaked 170 MB above 10,000
    untrimmed, 13 MB trimmed every 2,048 images)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _check_reference(model: nn.Module, reference: Mapping[str, torch.Tensor]) -> list[nn.Module]:
    """The transposed-conv modules whose weights `reference` names, in the reference's order."""
    if not reference:
        raise ValueError("reference is empty; pass the trained reference gradients "
                         "(TrainedGradCon.reference, or ag.gradcon.load(run).reference)")
    params, modules = dict(model.named_parameters()), dict(model.named_modules())
    layers = []
    for name, ref in reference.items():
        owner, _, leaf = name.rpartition(".")
        module = modules.get(owner)
        if name not in params or leaf != "weight" or not isinstance(module, nn.ConvTranspose2d):
            raise ValueError(f"reference names {name!r}, which is not a ConvTranspose2d weight of "
                             f"this model; use the names of model.gradient_layers()")
        if module.groups != 1:
            raise ValueError(f"{owner} is a grouped transposed convolution; gradcon scoring "
                             f"supports groups=1 only")
        if tuple(ref.shape) != tuple(params[name].shape):
            raise ValueError(f"reference {name!r} has shape {tuple(ref.shape)}, the weight "
                             f"{tuple(params[name].shape)}; the reference comes from another "
                             f"architecture - score with the model it was trained with")
        layers.append(module)
    return layers


def _patches(dy: torch.Tensor, layer: nn.ConvTranspose2d, h_in: int, w_in: int) -> torch.Tensor:
    """U: the patches of dy that the adjoint convolution of `layer` reads, as
    (B, h_in*w_in, kh*kw*C_out) in (position; kernel row, kernel column, channel) order, so that
    the weight gradient is A^T @ U with A = the layer input as (B, positions, C_in). Built from
    kh*kw strided slices of a channels-last copy of dy (faster on the CPU than F.unfold)."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (layer.kernel_size, layer.stride, layer.padding,
                                              layer.dilation)
    padded = F.pad(dy.permute(0, 2, 3, 1), (0, 0, pw, pw, ph, ph))  # (B, H + 2ph, W + 2pw, C)
    slices = [padded[:, p * dh:p * dh + sh * (h_in - 1) + 1:sh,
                     q * dw:q * dw + sw * (w_in - 1) + 1:sw]
              for p in range(kh) for q in range(kw)]
    b, c = dy.shape[:2]
    return torch.stack(slices, 3).reshape(b, h_in * w_in, kh * kw * c)


def _ghost_is_cheaper(c_in: int, d: int, positions: int) -> bool:
    """Gram matrices (positions^2 * (C_in + D) multiply-adds) beat materialising the per-image
    gradient (C_in * D * positions, written to memory and read twice) for layers with few
    positions; the factor 2 accounts for the memory traffic the ghost norm avoids."""
    return positions * (c_in + d) < c_in * d / 2


def _layer_dot_and_norm(a: torch.Tensor, dy: torch.Tensor, layer: nn.ConvTranspose2d,
                        ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image i: <g_i, ref> and |g_i| for g_i = dMSE_i/dW of one transposed conv."""
    b, c_in, h_in, w_in = a.shape
    positions = h_in * w_in
    A = a.permute(0, 2, 3, 1).reshape(b, positions, c_in)  # a view when a is channels-last
    U = _patches(dy, layer, h_in, w_in)
    if _ghost_is_cheaper(c_in, U.shape[2], positions):
        # <g_i, r> = <dy_i, convT(a_i, r)>: the layer's output is linear in its weight
        t = F.conv_transpose2d(a, ref, None, layer.stride, layer.padding, layer.output_padding,
                               layer.groups, layer.dilation)
        dot = (t * dy).flatten(1).sum(1)
        gram_a = A @ A.transpose(1, 2)
        gram_u = U @ U.transpose(1, 2)
        norm = (gram_a * gram_u).flatten(1).sum(1).clamp_min(0).sqrt()
    else:
        g = torch.bmm(A.transpose(1, 2), U).flatten(1)  # (B, C_in * kh*kw*C_out)
        dot = g @ ref.permute(0, 2, 3, 1).reshape(-1)  # W (C_in, C_out, kh, kw) in g's order
        norm = g.norm(dim=1)
    return dot, norm


def _batch_terms(model: nn.Module, layers: list[nn.Module], params: dict[str, torch.Tensor],
                 refs: list[torch.Tensor], x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(MSE per image, cosine per image and layer) for one batch, vectorised."""
    captured: dict[nn.Module, tuple[torch.Tensor, torch.Tensor]] = {}

    def keep(module, inputs, output):
        if module in captured:
            raise ValueError("a scored transposed conv runs twice in one forward pass; "
                             "gradcon scoring needs each scored layer to run once")
        captured[module] = (inputs[0], output)
        return output.clone()  # an in-place activation after the layer must not overwrite it

    hooks = [layer.register_forward_hook(keep) for layer in layers]
    try:
        # channels_last: oneDNN's fast path for transposed convolutions on the CPU
        x_in = x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x
        x_hat = torch.func.functional_call(model, params, (x_in,))
    finally:
        for h in hooks:
            h.remove()
    mse = (x_hat - x_in).pow(2).flatten(1).mean(1)
    # one backward pass gives every image's dMSE_i/dy at every layer (images are independent)
    inputs = [captured[layer][0] for layer in layers]
    dys = torch.autograd.grad(mse.sum(), [captured[layer][1] for layer in layers])
    cosines = []
    for a, dy, layer, ref in zip(inputs, dys, layers, refs, strict=True):
        dot, norm = _layer_dot_and_norm(a.detach(), dy, layer, ref)
        cosines.append(dot / (norm * ref.norm()).clamp_min(EPS))
    return mse.detach(), torch.stack(cosines, 1)


def _image_terms(model: nn.Module, weights: list[torch.Tensor], refs: list[torch.Tensor],
                 x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The official way: one image, one backward pass to the weights."""
    mse = F.mse_loss(model(x), x)
    grads = torch.autograd.grad(mse, weights)
    cosines = [(g.reshape(-1) @ r.reshape(-1)) / (g.norm() * r.norm()).clamp_min(EPS)
               for g, r in zip(grads, refs, strict=True)]
    return mse.detach().reshape(1), torch.stack(cosines).reshape(1, -1)


def score_table(model: nn.Module, reference: Mapping[str, torch.Tensor], images, *,
                batch_size: int = 256, grad_weight: float = GRAD_WEIGHT) -> ScoreTable:
    """Per-image GradCon terms: `mse`, `cos_<layer>` per decoder layer, `l_grad` (= -mean cos)
    and `score` = mse - grad_weight * mean cos (higher = more anomalous).

    `images`: a float tensor (N, C, H, W) in [0, 1], an ImageSet or an iterable of batches.
    batch_size=1 computes each image's gradient with its own backward pass (the official way);
    larger batches use the vectorised per-sample machinery. Eval mode; only per-image numbers
    are kept, so memory does not grow with the number of images."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1 (got {batch_size})")
    layers = _check_reference(model, reference)
    names = list(reference)
    first = next(model.parameters())
    device, dtype = first.device, first.dtype
    refs = [r.detach().to(device=device, dtype=dtype) for r in reference.values()]
    # batched: only the scored weights need gradients, so the encoder builds no graph
    params = {n: p.detach().requires_grad_(n in reference) for n, p in model.named_parameters()}
    # one at a time: the model as it is (as the official code), its scored weights trainable
    weights = [dict(model.named_parameters())[n] for n in names]
    frozen = [w for w in weights if not w.requires_grad]
    mses, coss = [], []
    scored = 0
    try:
        for w in frozen:
            w.requires_grad_(True)
        with eval_mode(model), torch.enable_grad():
            for x in image_batches(images, batch_size):
                x = x.to(device=device, dtype=dtype)
                if batch_size == 1:
                    mse, cos = _image_terms(model, weights, refs, x)
                else:
                    mse, cos = _batch_terms(model, layers, params, refs, x)
                mses.append(mse.cpu())
                coss.append(cos.detach().cpu())
                scored += len(x)
                if scored >= TRIM_EVERY:
                    _release_free_memory()
                    scored = 0
    finally:
        for w in frozen:
            w.requires_grad_(False)
    mse = torch.cat(mses) if mses else torch.zeros(0)
    cos = torch.cat(coss) if coss else torch.zeros(0, len(names))
    table: ScoreTable = {"mse": mse}
    for j, name in enumerate(names):
        table[f"cos_{name.removesuffix('.weight')}"] = cos[:, j]
    table["l_grad"] = -cos.mean(1)
    table["score"] = score_from_terms(mse, table["l_grad"], grad_weight)
    return table


def score_from_terms(mse: torch.Tensor, l_grad: torch.Tensor, grad_weight: float) -> torch.Tensor:
    """GradCon's anomaly score from its two per-image terms: mse + grad_weight * l_grad
    (= MSE - grad_weight * mean cos)."""
    return mse + grad_weight * l_grad


def gradcon_scores(model: nn.Module, reference: Mapping[str, torch.Tensor], images, *,
                   batch_size: int = 256, grad_weight: float = GRAD_WEIGHT) -> torch.Tensor:
    """One anomaly score per image: MSE - grad_weight * mean cos(per-image gradient, reference),
    over the decoder's transposed-conv weights named in `reference` (see `score_table`)."""
    return score_table(model, reference, images, batch_size=batch_size,
                       grad_weight=grad_weight)["score"]


def per_image_gradients(model: nn.Module, names: list[str], images: torch.Tensor
                        ) -> dict[str, torch.Tensor]:
    """Per-image dMSE_i/dW for the named weights with torch.func (functional_call + vmap +
    grad): the straightforward vectorisation, kept as a cross-check and for the benchmark."""
    from torch.func import functional_call, grad, vmap

    params = {n: p.detach() for n, p in model.named_parameters()}
    fixed = {n: p for n, p in params.items() if n not in names}

    def mse(weights, x):
        x = x.unsqueeze(0)
        return F.mse_loss(functional_call(model, fixed | weights, (x,)), x)

    return vmap(grad(mse), in_dims=(None, 0))({n: params[n] for n in names}, images)


__all__ = ["EPS", "GRAD_WEIGHT", "gradcon_scores", "per_image_gradients", "score_from_terms",
           "score_table"]
