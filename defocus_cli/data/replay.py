"""A replay pool of synthesised scenes: each costly synthetic scene feeds many training crops.

Synthesis (blur per depth level in linear light, noise, clipping) costs about twice an SFT-net training step
on a 2-core CPU with native bf16, so the generator, not the network, set the pace. :class:`ScenePool` keeps
``size`` whole scenes (``(C, S, S)`` tensors, ``S`` ≥ the largest patch), replaces ``refresh`` of them per
step on average (the oldest first), and cuts each batch from random pool scenes at random offsets, with
random vertical and horizontal flips. A horizontal flip mirrors the half-aperture kernels, so it swaps the
``left`` and ``right`` views (as :class:`~defocus_cli.data.PatchCache` does); the signed CoC is unchanged.

Deterministic in ``(seed, step)`` for a given history: a run resumed at step ``k`` refills the pool from
seeds derived from ``k`` (the crops differ from an uninterrupted run's, the distribution does not).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

Scene = dict[str, torch.Tensor]
_SWAP = {"left": "right", "right": "left"}


class ScenePool:
    """``size`` synthesised scenes reused for many crops.

    Args:
        make_scene: ``make_scene(i) -> {key: (C, S, S) tensor}``, deterministic in ``i`` (e.g.
            ``SyntheticDP(..., patch=S, grid=1).scene(i)[0]``).
        size: scenes kept (memory: ``size × S² × channels × 4`` bytes; 64 scenes of 256² with
            blur/left/right/sharp/coc ≈ 220 MB).
        refresh: new scenes per :meth:`batch` call on average (fractions accumulate: 0.5 = one every
            second step).
        seed: base seed of the scene indices and crops.
    """

    def __init__(self, make_scene: Callable[[int], Scene], size: int = 64, refresh: float = 0.5,
                 seed: int = 0) -> None:
        if size < 1:
            raise ValueError(f"pool size must be >= 1, got {size}")
        if refresh <= 0:
            raise ValueError(f"refresh must be > 0 scenes per step, got {refresh}")
        self.make_scene = make_scene
        self.size = int(size)
        self.refresh = float(refresh)
        self.seed = int(seed)
        self.scenes: list[Scene] = []
        self._next = 0  # the oldest slot, replaced next
        self._credit = 0.0
        self.made = 0  # scenes synthesised so far (for logs and tests)

    def _new(self, step: int, k: int) -> Scene:
        self.made += 1
        return self.make_scene(int(np.random.default_rng([self.seed, 11, step, k]).integers(0, 2**31)))

    def _advance(self, step: int) -> None:
        if not self.scenes:  # (re)fill: the first call, or the first after a resume
            self.scenes = [self._new(step, k) for k in range(self.size)]
            return
        self._credit += self.refresh
        k = 0
        while self._credit >= 1.0:
            self.scenes[self._next] = self._new(step, self.size + k)
            self._next = (self._next + 1) % self.size
            self._credit -= 1.0
            k += 1

    def batch(self, step: int, patch: int, n: int) -> dict[str, torch.Tensor]:
        """``n`` crops ``{key: (n, C, patch, patch)}`` for training step ``step``; ``patch`` ≤ the scene side."""
        self._advance(step)
        rng = np.random.default_rng([self.seed, 13, step])
        out: dict[str, list[torch.Tensor]] = {}
        for _ in range(n):
            sc = self.scenes[int(rng.integers(0, len(self.scenes)))]
            h, w = next(iter(sc.values())).shape[-2:]
            if patch > min(h, w):
                raise ValueError(f"patch {patch} px is larger than the pool's {h}x{w} scenes")
            y, x = int(rng.integers(0, h - patch + 1)), int(rng.integers(0, w - patch + 1))
            vflip, hflip = rng.random() < 0.5, rng.random() < 0.5
            for key, v in sc.items():
                c = v[..., y:y + patch, x:x + patch]
                if vflip:
                    c = c.flip(-2)
                if hflip:
                    c = c.flip(-1)
                    key = _SWAP.get(key, key)
                out.setdefault(key, []).append(c)
        return {k: torch.stack(v) for k, v in out.items()}


__all__ = ["ScenePool"]
