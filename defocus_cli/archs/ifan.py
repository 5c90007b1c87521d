"""IFAN: Iterative Filter Adaptive Network (Lee, Son, Rim, Cho, Lee; CVPR 2021), single-image defocus deblurring.

Re-implemented from the paper and the project's architecture notes (no upstream code); the state-dict layout is
identical to the ``Network`` half of the released ``IFAN.pytorch`` checkpoint (158 tensors, **10,476,996**
parameters; the training-only reblurring network is not part of this module) and the behaviour matches the
official eval-mode network to ~2e-7 max abs in float32 on CPU (the project's test vectors: output and DME map).

Released configuration reproduced (``config_IFAN``): channels 32/64/128/128, 3x3 convolutions with LeakyReLU(0.1),
``res_num=2`` residual blocks, IAC filter size 3, **N=17** IAC iterations at 1/8 resolution.

Graph (all at 1/8 resolution unless stated)::

    f1,f2,f3,fC = deblur encoder(x)        # 1, 1/2, 1/4, 1/8; 32, 64, 128, 128 ch
    e           = filter encoder(x)        # same layout, own weights
    d           = DME(e)                   # disparity-map estimator, 1 channel (part of the inference graph)
    g           = conv4_4(cat[e, conv_DME(d)])
    filters     = F(g)                     # 1x1 conv to 17*(128*3*2) + 17*128 = 15,232 channels
    f           = IAC(fC, filters)         # 17 iterations of separable 3-tap filtering + bias + LeakyReLU
    f           = conv_res(f); upsample x2 (+f3), x2 (+f2), x2 (+f1) with residual blocks
    y           = out_res(f) + x           # out_res keeps its LeakyReLU, as released; the engine clips to [0, 1]

IAC (iterative adaptive convolution), per iteration *i*: a vertical 3-tap pass (replicate-padded rows) with
per-pixel, per-channel taps, then a horizontal 3-tap pass on its result, then the iteration's per-pixel bias and
LeakyReLU(0.1) -- applied after every iteration, the last one included. **Quirk reproduced:** the released code
uses the first predicted kernel ("kernel1") for *both* passes; the second kernel is predicted but never used
(upstream issue #13), and the released weights depend on it.

Efficiency: since ``F.3`` is a 1x1 convolution and kernel2 is never used, :class:`IFAN` computes, per iteration,
only the 3x128 taps and 128 biases it needs (512 of the 15,232 channels) right before using them. The result is
the same as materialising the whole filter tensor, with ~43% less work in that layer and without its memory
(0.95 GB per input megapixel in fp32 for the full tensor; 32 MB/MP for one iteration's slice).
Plain tensor ops only (no unfold, no Python loops over pixels); works in channels_last.

Cost: 392.5 GMAC per megapixel as released (371.8 conv + 20.5 transposed conv + 0.2 IAC); ~379 GMAC/MP as
computed here (the unused kernel2 channels are skipped).

Licence note: the official IFAN code and weights are AGPL-3.0; this file contains no upstream code.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["IFAN", "ResBlock", "iac_iteration", "DEFAULT_COC_PER_DME", "METADATA_KEY"]

_SLOPE = 0.1
#: Ratio of a disc CoC radius to the dual-pixel disparity it produces (centroid distance of the two half-discs
#: is 8r/(3*pi)), used by :meth:`IFAN.defocus_map`.
COC_PER_DISPARITY: float = 3.0 * math.pi / 8.0
#: Default of :attr:`IFAN.coc_per_dme`, the signed CoC radius (input px) per unit of raw DME output: DME output
#: taken as 1/8-scale disparity (x 8 -> full-resolution px) x :data:`COC_PER_DISPARITY` = 3*pi ~ +9.42. The
#: documented approximation for the official weights; weights that know better record their own factor.
DEFAULT_COC_PER_DME: float = 8.0 * COC_PER_DISPARITY
#: safetensors metadata key of the factor (a decimal number, e.g. ``"-16.0"``).
METADATA_KEY: str = "dme_to_coc"


def _check_scale(value: float) -> float:
    v = float(value)
    if not math.isfinite(v) or v == 0.0:
        raise ValueError(f"{METADATA_KEY} must be a finite, non-zero number of CoC px per DME unit, got {value!r}")
    return v


def _conv(cin: int, cout: int, k: int = 3, stride: int = 1, act: bool = True) -> nn.Module:
    """3x3 (or k x k) conv with 'same' padding; with ``act`` wrapped as ``Sequential(conv, LeakyReLU(0.1))``
    (state-dict names ``X.0.weight``), else a bare conv (``X.weight``)."""
    conv = nn.Conv2d(cin, cout, k, stride=stride, padding=(k - 1) // 2, bias=True)
    return nn.Sequential(conv, nn.LeakyReLU(_SLOPE)) if act else conv


def _upconv(cin: int, cout: int) -> nn.Module:
    """x2 upsampling: ConvTranspose2d(k=4, s=2, p=1) + LeakyReLU(0.1)."""
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1, bias=True), nn.LeakyReLU(_SLOPE))


class ResBlock(nn.Module):
    """``res_num`` stems of conv3x3 -> LReLU -> conv3x3; ``x = lrelu(x + stem(x))`` per stem, and with
    ``res_num > 1`` the block input is added once more at the end (no activation after that add).

    Shapes: ``(N, C, H, W) -> (N, C, H, W)``.
    """

    def __init__(self, channels: int, res_num: int) -> None:
        super().__init__()
        self.res_num = res_num
        self.stem = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(channels, channels, 3, padding=1),
                nn.LeakyReLU(_SLOPE),
                nn.Conv2d(channels, channels, 3, padding=1),
            )
            for _ in range(res_num)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inp = x
        for s in self.stem:
            x = F.leaky_relu(x + s(x), _SLOPE)
        return x + inp if self.res_num > 1 else x


def _encoder(prefix: str, owner: nn.Module) -> None:
    """Register the 12-conv encoder ``{prefix}1_1 .. {prefix}4_3`` (3 -> 32, /2 64, /2 128, /2 128) on ``owner``."""
    plan = ((3, 32), (32, 64), (64, 128), (128, 128))
    for level, (cin, cout) in enumerate(plan, start=1):
        owner.add_module(f"{prefix}{level}_1", _conv(cin, cout, stride=1 if level == 1 else 2))
        owner.add_module(f"{prefix}{level}_2", _conv(cout, cout))
        owner.add_module(f"{prefix}{level}_3", _conv(cout, cout))


def iac_iteration(f: torch.Tensor, k0: torch.Tensor, k1: torch.Tensor, k2: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """One IAC iteration with the released quirk (the same taps for the vertical and horizontal pass).

    Args:
        f: features ``(N, C, h, w)``.
        k0, k1, k2: per-pixel, per-channel taps ``(N, C, h, w)`` for offsets -1, 0, +1 (rows, then columns).
        bias: ``(N, C, h, w)``.
    Returns:
        ``leaky_relu(horizontal(vertical(f)) + bias, 0.1)``, shape ``(N, C, h, w)``.
    """
    p = F.pad(f, (0, 0, 1, 1), mode="replicate")
    v = k0 * p[:, :, :-2] + k1 * p[:, :, 1:-1] + k2 * p[:, :, 2:]
    p = F.pad(v, (1, 1, 0, 0), mode="replicate")
    h = k0 * p[..., :-2] + k1 * p[..., 1:-1] + k2 * p[..., 2:]
    return F.leaky_relu(h + bias, _SLOPE)


class IFAN(nn.Module):
    """IFAN deblurring engine (released N=17 configuration). See the module docstring.

    ``forward(x)``: ``x`` float ``(N, 3, H, W)`` RGB in ``[0, 1]``, ``H, W`` multiples of 8 -> same shape, unclipped.
    The engine (:class:`defocus_cli.restorer.Restorer`) pads other sizes at the bottom/right (reflect), clips to
    ``[0, 1]`` and crops back (the official scripts crop the input instead, so border pixels can differ slightly
    from the official tool's output).
    """

    #: Size multiple of the core network (three stride-2 stages).
    multiple_of: int = 8
    #: Context per tile side (px, full resolution). The theoretical receptive field reaches ~520 px per side
    #: (filter branch ~278 px + 17 IAC iterations x 8 px + decoder ~100 px), far more than any practical overlap;
    #: the influence decays fast. Measured tiled-vs-whole PSNR at 1680x1120, tile 768 (bench/bench_tiling.py
    #: --overlaps): random weights 109/123/139/158/162 dB and the shipped weights 153/171/174/173/172 dB at
    #: 16/32/48/64/128 px, against a 45 dB target. 48 px (about twice the largest CoC radius the network is
    #: trained for) keeps a wide margin for other checkpoints and costs 1.08x pixels at 24 MP (128 px: 1.20x).
    receptive_field: int = 48
    #: Peak RSS growth of a whole-image fp32 forward on CPU with the tuned allocator, bytes per input pixel
    #: (measured 1184 at 0.6-2.1 MP by bench/bench_engines.py --sections bpp, plus ~10%); tile='auto' uses it.
    bytes_per_pixel: int = 1300
    #: Precisions the runtime may choose: bf16 measured within 0.001 dB of fp32 on the 7 LFDOF images (shipped
    #: weights, bench/results/bf16_all7.json); fp16 not validated.
    safe_precisions: tuple[str, ...] = ("fp32", "bf16")

    def __init__(self, ch: int = 32, n_iters: int = 17, filter_size: int = 3, res_num: int = 2,
                 coc_per_dme: float | None = None) -> None:
        super().__init__()
        #: signed CoC radius (input px) per unit of DME output, used by :meth:`defocus_map` (not in the state dict;
        #: set from the weight file's metadata by :meth:`configure_from_metadata`).
        self.coc_per_dme: float = DEFAULT_COC_PER_DME if coc_per_dme is None else _check_scale(coc_per_dme)
        if filter_size != 3:
            raise ValueError(f"IFAN supports filter_size=3 (the released configuration), got {filter_size}")
        ch1, ch2, ch3, ch4 = ch, ch * 2, ch * 4, ch * 4
        if (ch1, ch2, ch3, ch4) != (32, 64, 128, 128):
            raise ValueError(f"IFAN is built for ch=32 (the released configuration), got ch={ch}")
        self.n_iters = n_iters
        self.ch4 = ch4
        self.taps = filter_size

        # Definition order = official state-dict order (keys_ifan.txt).
        _encoder("conv", self)
        self.conv4_4 = nn.Sequential(_conv(ch4 * 2, ch4), ResBlock(ch4, res_num), ResBlock(ch4, res_num), _conv(ch4, ch4))
        self.conv_res = nn.Sequential(_conv(ch4, ch4), ResBlock(ch4, 3), _conv(ch4, ch4))
        self.upconv3_u = _upconv(ch4, ch3)
        self.upconv3_1 = ResBlock(ch3, 1)
        self.upconv3_2 = ResBlock(ch3, 1)
        self.upconv2_u = _upconv(ch3, ch2)
        self.upconv2_1 = ResBlock(ch2, 1)
        self.upconv2_2 = ResBlock(ch2, 1)
        self.upconv1_u = _upconv(ch2, ch1)
        self.upconv1_1 = ResBlock(ch1, 1)
        self.upconv1_2 = ResBlock(ch1, 1)
        self.out_res = _conv(ch1, 3)
        _encoder("kconv", self)
        self.DME = nn.Sequential(_conv(ch4, ch4), ResBlock(ch4, res_num), ResBlock(ch4, res_num), _conv(ch4, 1, act=False))
        self.conv_DME = _conv(1, ch4)
        n_filter = n_iters * (ch4 * filter_size * 2) + n_iters * ch4
        self.F = nn.Sequential(
            _conv(ch4, ch4), ResBlock(ch4, res_num), ResBlock(ch4, res_num), _conv(ch4, n_filter, k=1, act=False)
        )

    # ------------------------------------------------------------------------------------------------
    # pieces

    def _encode(self, prefix: str, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for level in range(1, 5):
            for j in range(1, 4):
                x = getattr(self, f"{prefix}{level}_{j}")(x)
            feats.append(x)
        return feats

    def _iac_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows of ``F.3`` each iteration needs, reordered tap-major: ``(n_iters, 4*C, C_in, 1, 1)`` weights and
        ``(n_iters, 4*C)`` biases; output channel ``t*C + c`` is tap ``t`` of channel ``c`` (t = 0, 1, 2) and
        ``3*C + c`` the bias of channel ``c``.

        Official layout of the 15,232 channels: for iteration ``i``, kernel1 at ``i*6C + 3c + t``, kernel2 (unused)
        at ``i*6C + 3C + 3c + t``; biases after all kernels, at ``n_iters*6C + i*C + c``.
        """
        c, t, n = self.ch4, self.taps, self.n_iters
        dev = self.F[3].weight.device
        it = torch.arange(n, device=dev).view(n, 1, 1)
        ch = torch.arange(c, device=dev).view(1, 1, c)
        tap = torch.arange(t, device=dev).view(1, t, 1)
        k_idx = (it * (2 * t * c) + t * ch + tap).reshape(n, t * c)  # (n, t*C), tap-major
        b_idx = (n * 2 * t * c + it.view(n, 1) * c + ch.view(1, c))  # (n, C)
        idx = torch.cat([k_idx, b_idx], dim=1)  # (n, (t+1)*C)
        w = self.F[3].weight.index_select(0, idx.reshape(-1)).view(n, (t + 1) * c, *self.F[3].weight.shape[1:])
        b = self.F[3].bias.index_select(0, idx.reshape(-1)).view(n, (t + 1) * c)
        return w, b

    def _filter_features(self, x8: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Filter-encoder output ``e`` (N, 128, H/8, W/8) -> (DME output ``d`` (N, 1, H/8, W/8), F-trunk features)."""
        d = self.DME(x8)
        g = self.conv4_4(torch.cat([x8, self.conv_DME(d)], dim=1))
        g = self.F[2](self.F[1](self.F[0](g)))
        return d, g

    def _iac(self, f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """Apply the 17 IAC iterations to ``f`` (N, 128, h, w) with filters predicted from ``g`` (N, 128, h, w)."""
        w, b = self._iac_weights()
        c = self.ch4
        for i in range(self.n_iters):
            k = F.conv2d(g, w[i], b[i])
            f = iac_iteration(f, k[:, :c], k[:, c : 2 * c], k[:, 2 * c : 3 * c], k[:, 3 * c :])
        return f

    # ------------------------------------------------------------------------------------------------
    # public API

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Deblur ``x`` (N, 3, H, W) RGB [0, 1], H and W multiples of :attr:`multiple_of` → (N, 3, H, W), unclipped
        (the engine, :class:`defocus_cli.restorer.Restorer`, pads, clamps to [0, 1] and crops)."""
        return self.forward_train(x)[0]

    def forward_train(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The whole network on ``x`` (N, 3, H, W) RGB [0, 1] with H, W multiples of 8 (no padding), unclipped.

        Returns ``(y, d, g)``: the output ``x + out_res(...)`` (N, 3, H, W) before the final clip to [0, 1], the DME
        output (N, 1, H/8, W/8) and the filter-trunk features (N, 128, H/8, W/8), the input of the filter
        predictor's last 1x1 conv (for trainers' auxiliary losses).
        """
        f1, f2, f3, fc = self._encode("conv", x)
        d, g = self._filter_features(self._encode("kconv", x)[-1])
        f = self.conv_res(self._iac(fc, g))
        f = self.upconv3_2(self.upconv3_1(self.upconv3_u(f) + f3))
        f = self.upconv2_2(self.upconv2_1(self.upconv2_u(f) + f2))
        f = self.upconv1_2(self.upconv1_1(self.upconv1_u(f) + f1))
        return self.out_res(f) + x, d, g

    def dme(self, x: torch.Tensor) -> torch.Tensor:
        """Raw disparity-map-estimator output at 1/8 resolution: ``(N, 1, H/8, W/8)``; H, W multiples of 8.

        Trained as the left->right dual-pixel disparity of the 1/8-downsampled views (inferred unit: pixels of the
        1/8-scale image; sign: the DP left/right convention of DPDD, front/back focus). Only the filter branch runs.
        """
        return self.DME(self._encode("kconv", x)[-1])

    @staticmethod
    def coc_per_dme_from_metadata(meta: Mapping[str, str]) -> float | None:
        """The CoC-per-DME factor a weight file records in its safetensors metadata (the :data:`METADATA_KEY`
        entry, e.g. ``"dme_to_coc": "-16.0"``), ``None`` when it records none.

        Raises:
            ValueError: the recorded value is not a finite, non-zero number.
        """
        raw = meta.get(METADATA_KEY)
        if raw is None:
            return None
        try:
            value = float(str(raw).strip())
        except ValueError:
            raise ValueError(f"{METADATA_KEY}={raw!r} in the weight metadata is not a number") from None
        return _check_scale(value)

    def configure_from_metadata(self, meta: Mapping[str, str]) -> None:
        """Apply a weight file's metadata (called by :func:`defocus_cli.weights.load_model` after loading): sets
        :attr:`coc_per_dme` from it when recorded; otherwise (e.g. official converted weights) it stays as built,
        by default :data:`DEFAULT_COC_PER_DME`."""
        value = self.coc_per_dme_from_metadata(meta)
        if value is not None:
            self.coc_per_dme = value

    def defocus_map(self, x: torch.Tensor) -> torch.Tensor:
        """Signed defocus estimate ``(N, 1, H, W)`` (H, W multiples of 8; the runtime pads other sizes):
        approximate circle-of-confusion radius in input pixels.

        The DME output is upsampled bilinearly to the input size and multiplied by :attr:`coc_per_dme`.

        * Weights that record the factor (``dme_to_coc`` in their metadata, see :meth:`configure_from_metadata`)
          use it: our trained weights were supervised with ``DME = -CoC(1/8) / 16``, so ``coc_per_dme = -16``.
        * Otherwise (the official weights) the documented approximation :data:`DEFAULT_COC_PER_DME` = 8 x
          :data:`COC_PER_DISPARITY`: the DME output is taken as DP disparity in 1/8-scale pixels (x 8 ->
          full-resolution disparity), and for a disc PSF of radius r split into two half-apertures the half-disc
          centroids are 8r/(3*pi) apart. That disparity unit is inferred, not verified against the training code,
          and the official DME was only supervised through a warping loss: treat those values as a relative map
          whose magnitude is roughly a CoC radius in px.
        """
        h, w = x.shape[-2:]
        d = self.dme(x)
        d = F.interpolate(d, scale_factor=float(self.multiple_of), mode="bilinear", align_corners=False)
        return d[..., :h, :w] * self.coc_per_dme
