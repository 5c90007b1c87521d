"""LPIPS (Zhang et al., CVPR 2018), AlexNet backbone, version 0.1, offline.

Same numbers as ``lpips.LPIPS(net='alex', version='0.1')(pred, target, normalize=True)``:

1. inputs on [0, 1] are mapped to [-1, 1] (``x·2 − 1``), then shifted/scaled per channel by the LPIPS
   "scaling layer" (shift ``(-.030, -.088, -.188)``, scale ``(.458, .448, .450)``, RGB);
2. AlexNet ``features`` (5 conv + ReLU stages, max-pools between the first three) give 5 feature maps;
3. each map is normalised to unit length over channels (``x / (‖x‖₂ + 1e-10)``);
4. the squared difference of the two normalised maps is weighted per channel by a 1×1 "lin" layer
   (no bias), averaged over space, and the 5 values are summed.

Weights: ``defocus_cli/assets/lpips_alex_v0.1.safetensors`` (torchvision AlexNet conv layers, BSD-3, +
LPIPS v0.1 linear heads, BSD-2; see ``assets/NOTICE-lpips.md``), checked by sha256 before use; no network.
"""

from __future__ import annotations

import functools
import logging
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from defocus_cli.errors import InputError, WeightsError
from defocus_cli.fetch import sha256_file

log = logging.getLogger(__name__)

WEIGHTS_NAME = "lpips_alex_v0.1.safetensors"
WEIGHTS_SHA256 = "8615939a3e18a6cf05f9af62b4977465c17633b2af99b89dc5e4254a57cec793"

SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
EPS = 1e-10
MIN_SIDE = 31
"""Smallest side AlexNet's stride-4 conv and two 3×3/2 max-pools accept."""

SETTINGS = {
    "net": "alex",
    "version": "0.1",
    "input_range": "[-1,1] (x*2-1 of [0,1] RGB)",
    "spatial": "mean",
    "weights": WEIGHTS_NAME,
    "weights_sha256": WEIGHTS_SHA256,
}
"""The LPIPS conventions, recorded in every score output."""

# (in, out, kernel, stride, padding, max-pool before) of AlexNet's five conv stages.
_STAGES = (
    (3, 64, 11, 4, 2, False),
    (64, 192, 5, 1, 2, True),
    (192, 384, 3, 1, 1, True),
    (384, 256, 3, 1, 1, False),
    (256, 256, 3, 1, 1, False),
)
# state-dict names as in lpips.LPIPS(net='alex'): conv of stage i is net.slice{i+1}.{index in alexnet.features}
_CONV_INDEX = (0, 3, 6, 8, 10)


def weights_path() -> Path:
    """Path of the shipped LPIPS weights file."""
    return Path(str(resources.files("defocus_cli") / "assets" / WEIGHTS_NAME))


class LPIPSAlex(nn.Module):
    """LPIPS AlexNet v0.1. Inputs ``(N, 3, H, W)`` float RGB on [0, 1]; output ``(N,)`` distances (≥ 0).

    :meth:`features` and :meth:`distance` are split so that a ground truth's features can be computed once
    and compared with several images (result and blurry input).
    """

    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(i, o, k, stride=s, padding=p) for i, o, k, s, p, _ in _STAGES)
        self.pool_before = tuple(pb for *_, pb in _STAGES)
        self.lins = nn.ModuleList(nn.Conv2d(o, 1, 1, bias=False) for _, o, *_ in _STAGES)
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)

    def load_lpips_state_dict(self, sd: dict[str, Tensor]) -> None:
        """Load tensors named as in ``lpips.LPIPS(net='alex').state_dict()``."""
        mine: dict[str, Tensor] = {}
        for i, idx in enumerate(_CONV_INDEX):
            mine[f"convs.{i}.weight"] = sd[f"net.slice{i + 1}.{idx}.weight"]
            mine[f"convs.{i}.bias"] = sd[f"net.slice{i + 1}.{idx}.bias"]
            mine[f"lins.{i}.weight"] = sd[f"lin{i}.model.1.weight"]
        self.load_state_dict(mine, strict=True)

    def features(self, x: Tensor) -> list[Tensor]:
        """Unit-normalised AlexNet features of ``x`` ``(N, 3, H, W)`` on [0, 1]: 5 maps ``(N, C_i, H_i, W_i)``."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise InputError(f"LPIPS expects an (N, 3, H, W) RGB tensor, found shape {tuple(x.shape)}")
        if min(x.shape[2], x.shape[3]) < MIN_SIDE:
            raise InputError(
                f"LPIPS needs images of at least {MIN_SIDE}×{MIN_SIDE} px (AlexNet strides), "
                f"found {x.shape[3]}×{x.shape[2]}; leave lpips out of --metrics for tiny images"
            )
        # channels-last activations run the convolutions ~20 % faster on CPU (oneDNN) and on CUDA (cuDNN)
        h = (((x * 2.0 - 1.0) - self.shift) / self.scale).contiguous(memory_format=torch.channels_last)
        out: list[Tensor] = []
        for conv, pool in zip(self.convs, self.pool_before):
            if pool:
                h = F.max_pool2d(h, kernel_size=3, stride=2)
            h = F.relu(conv(h), inplace=True)
            # out-of-place ``+ EPS``: vector_norm saves its output for backward, so an in-place add would
            # break autograd (same values either way)
            norm = torch.linalg.vector_norm(h, dim=1, keepdim=True) + EPS
            out.append(h / norm)
        return out

    def distance(self, fa: list[Tensor], fb: list[Tensor]) -> Tensor:
        """LPIPS distance ``(N,)`` between two feature lists from :meth:`features` (broadcasts over N)."""
        total: Tensor | None = None
        for lin, a, b in zip(self.lins, fa, fb):
            d = lin((a - b).square_()).mean(dim=(1, 2, 3))
            total = d if total is None else total + d
        assert total is not None
        return total

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """LPIPS ``(N,)`` of ``pred`` vs ``target``, both ``(N, 3, H, W)`` on [0, 1] with equal shapes."""
        if pred.shape != target.shape:
            raise InputError(
                f"LPIPS needs equal shapes: expected {tuple(target.shape)} (target), found {tuple(pred.shape)}"
            )
        f = self.features(torch.cat([pred, target], dim=0))
        n = pred.shape[0]
        return self.distance([t[:n] for t in f], [t[n:] for t in f])


@functools.lru_cache(maxsize=4)
def load_lpips(device: str = "cpu") -> LPIPSAlex:
    """The LPIPS network with the shipped weights, in eval mode on ``device`` (cached per device).

    Raises:
        WeightsError: the shipped weights file is missing or does not match its sha256.
    """
    from safetensors.torch import load_file

    path = weights_path()
    if not path.is_file():
        raise WeightsError(f"LPIPS weights not found at {path}; reinstall defocus-cli (the file ships with it)")
    digest = sha256_file(path, use_memo=False)
    if digest != WEIGHTS_SHA256:
        raise WeightsError(
            f"LPIPS weights at {path} are corrupt: expected sha256 {WEIGHTS_SHA256[:12]}…, found {digest[:12]}…; "
            "reinstall defocus-cli"
        )
    net = LPIPSAlex()
    net.load_lpips_state_dict(load_file(str(path)))
    log.debug("loaded LPIPS alex v0.1 from %s", path)
    return net.eval().requires_grad_(False).to(device=device, memory_format=torch.channels_last)


def to_tensor(img: np.ndarray) -> Tensor:
    """``H×W×3`` array on [0, 1] → ``(1, 3, H, W)`` float32 tensor."""
    a = np.asarray(img)
    if a.ndim != 3 or a.shape[2] != 3:
        raise InputError(f"LPIPS expects an H×W×3 RGB image, found an array of shape {a.shape}")
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1), dtype=np.float32)).unsqueeze(0)


def lpips(pred: np.ndarray, target: np.ndarray, device: str = "cpu") -> float:
    """LPIPS AlexNet v0.1 of one ``H×W×3`` RGB pair on [0, 1] (pred, target order; symmetric anyway)."""
    p, t = np.asarray(pred), np.asarray(target)
    if p.shape != t.shape:
        raise InputError(f"LPIPS needs equal shapes: expected {t.shape} (ground truth), found {p.shape}")
    net = load_lpips(device)
    with torch.inference_mode():
        return float(net(to_tensor(p).to(device), to_tensor(t).to(device))[0])
