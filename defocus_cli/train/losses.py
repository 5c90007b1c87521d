"""Training losses shared by the trainers: perceptual loss on the LPIPS AlexNet features, the
defocus-weighted WGAN-GP critic/generator terms of DefocusGAN, and a total-variation prior.

Every image argument is a float tensor ``(N, 3, H, W)``, RGB, values in ``[0, 1]``.

Perceptual loss: the DefocusGAN paper uses the MSE of VGG19 ``conv3_3`` features (Johnson et al.). VGG19
weights are not available offline, so :class:`PerceptualLoss` uses the AlexNet of the shipped LPIPS v0.1
weights (:mod:`defocus_cli.lpips`) instead: by default the full (differentiable) LPIPS distance, i.e. the
learned-weight squared difference of the unit-normalised features of all five stages (``mode="lpips"``);
``mode="conv3"`` gives the closest analogue of the paper's loss, the MSE of the raw ReLU features of AlexNet's
third conv stage. The network is frozen (no gradients to its weights; gradients flow to the input).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "PerceptualLoss",
    "defocus_weight",
    "critic_loss_wgan_gp",
    "generator_adv_loss",
    "gradient_penalty",
    "tv_loss",
]


class PerceptualLoss(nn.Module):
    """Perceptual distance ``pred`` vs ``target`` (both ``(N, 3, H, W)`` RGB [0, 1]) → scalar, ≥ 0.

    Args:
        mode: ``"lpips"`` (LPIPS AlexNet v0.1 distance, mean over the batch) or ``"conv3"`` (MSE of AlexNet
            conv3 ReLU features, the analogue of the paper's VGG19 conv3_3 loss).
    """

    def __init__(self, mode: str = "lpips") -> None:
        super().__init__()
        if mode not in ("lpips", "conv3"):
            raise ValueError(f"mode must be 'lpips' or 'conv3'; got {mode!r}")
        from defocus_cli.lpips import LPIPSAlex, load_lpips

        src = load_lpips("cpu")
        net = LPIPSAlex()
        net.load_state_dict(src.state_dict())
        self.net = net.eval().requires_grad_(False)
        self.mode = mode

    def train(self, mode: bool = True) -> "PerceptualLoss":  # keep the frozen net in eval mode
        super().train(mode)
        self.net.eval()
        return self

    def _features(self, x: Tensor, upto: int = 4) -> list[Tensor]:
        """Raw ReLU features of AlexNet stages ``0..upto`` (out-of-place ops only, so autograd-safe)."""
        net = self.net
        h = ((x * 2.0 - 1.0) - net.shift) / net.scale
        out: list[Tensor] = []
        for i, (conv, pool) in enumerate(zip(net.convs, net.pool_before)):
            if i > upto:
                break
            if pool:
                h = F.max_pool2d(h, kernel_size=3, stride=2)
            h = F.relu(conv(h))
            out.append(h)
        return out

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        if self.mode == "conv3":
            with torch.no_grad():
                ft = self._features(target, 2)[-1]
            return F.mse_loss(self._features(pred, 2)[-1], ft)
        with torch.no_grad():
            ft = [f / (f.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10) for f in self._features(target)]
        total = pred.new_zeros(())
        for lin, f, t in zip(self.net.lins, self._features(pred), ft):
            f = f / (f.pow(2).sum(dim=1, keepdim=True).add(1e-20).sqrt() + 1e-10)
            total = total + lin((f - t) ** 2).mean()
        return total


def defocus_weight(coc: Tensor, size: tuple[int, int], scale: float = 0.1) -> Tensor:
    """DefocusGAN's defocus weighting of the critic's patch responses.

    Args:
        coc: ``(N, 1 or C, H, W)`` CoC radius in px (sign ignored).
        size: ``(h, w)`` of the critic's patch map.
        scale: weight per px of blur radius (the official code uses ``0.1 · map``).
    Returns:
        ``(N, 1, h, w)`` weights ``1 + scale · |coc|`` area-averaged to the patch grid (≥ 1, so in-focus
        regions still count; blurrier regions count more).
    """
    m = coc.abs().amax(dim=1, keepdim=True)
    return 1.0 + scale * F.adaptive_avg_pool2d(m, size)


def gradient_penalty(critic: nn.Module, real: Tensor, fake: Tensor) -> Tensor:
    """WGAN-GP term ``E[(‖∇_x D(x̂)‖₂ − 1)²]`` on random interpolates of ``real`` and ``fake`` (scalar)."""
    n = real.shape[0]
    eps = torch.rand(n, 1, 1, 1, device=real.device, dtype=real.dtype)
    x = (eps * real + (1 - eps) * fake.detach()).requires_grad_(True)
    out = critic(x)
    (grad,) = torch.autograd.grad(out.sum(), x, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1.0) ** 2).mean()


def critic_loss_wgan_gp(
    critic: nn.Module, real: Tensor, fake: Tensor, coc: Tensor | None = None, gp_weight: float = 10.0
) -> tuple[Tensor, dict[str, float]]:
    """Defocus-weighted WGAN-GP critic loss (to minimise): ``mean(w·D(fake)) − mean(w·D(real)) + λ·GP``.

    Args:
        critic: maps ``(N, 3, H, W)`` → ``(N, 1, h, w)`` patch scores.
        real, fake: ``(N, 3, H, W)`` RGB [0, 1] (``fake`` is detached here).
        coc: ``(N, 1, H, W)`` defocus map in px for the weights (None → uniform weights).
        gp_weight: λ of the gradient penalty (10 as in WGAN-GP and the official code).
    Returns:
        ``(loss, logs)`` with ``logs`` = ``{"d_real", "d_fake", "gp"}`` floats.
    """
    d_real = critic(real)
    d_fake = critic(fake.detach())
    w = defocus_weight(coc, d_real.shape[-2:]) if coc is not None else torch.ones_like(d_real)
    gp = gradient_penalty(critic, real, fake)
    loss = (w * d_fake).mean() - (w * d_real).mean() + gp_weight * gp
    return loss, {"d_real": d_real.mean().item(), "d_fake": d_fake.mean().item(), "gp": gp.item()}


def generator_adv_loss(critic: nn.Module, fake: Tensor, coc: Tensor | None = None) -> Tensor:
    """Defocus-weighted WGAN generator term ``−mean(w·D(fake))`` (scalar; gradients flow to ``fake``)."""
    d_fake = critic(fake)
    w = defocus_weight(coc, d_fake.shape[-2:]) if coc is not None else torch.ones_like(d_fake)
    return -(w * d_fake).mean()


def tv_loss(x: Tensor) -> Tensor:
    """Anisotropic total variation ``mean|∂x| + mean|∂y|`` of ``(N, C, H, W)`` (smoothness prior, scalar)."""
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()
