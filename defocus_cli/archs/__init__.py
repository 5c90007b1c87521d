"""Network architectures. Each file holds one network behind one tensor contract.

The engine contract (every deblurring network registered with task ``deblur``):

* ``forward(x)`` takes ``x``: float tensor ``(N, 3, H, W)``, **RGB**, values in ``[0, 1]``, ``H, W`` multiples
  of ``multiple_of``, and returns a tensor of the same shape and device (it may leave ``[0, 1]``).
  Padding to the multiple, cropping back and the clamp to ``[0, 1]`` are the engine's, once, for every
  network (:class:`defocus_cli.restorer.Restorer`); colour order (e.g. DefocusGAN's BGR) and input packing
  (e.g. the image fed twice as 6 channels) are handled *inside* the network's ``forward``.
* Class attributes used by the runtime (tiling, precision), restated in the arch table row:
  ``multiple_of: int`` the size multiple the core network needs (inputs are padded to it; tiles are
  aligned to it); ``receptive_field: int`` pixels of context per side a tile needs for
  near-seamless output; ``safe_precisions: tuple[str, ...]`` among ``("fp32", "bf16", "fp16")``.
* Networks that estimate a defocus map expose ``defocus_map(x) -> (N, 1, H, W)`` float tensor (same size
  multiples): circle of confusion radius in pixels of the input image (signed where the network knows the sign).
* Map networks (task ``map``, DP pair in) take ``forward(left, right)`` each ``(N, 3, H, W)`` RGB [0, 1]
  (same size multiples; :func:`defocus_cli.runtime.run_engine` pads) and return ``(N, 1, H, W)`` signed CoC
  radius in pixels.

Archs import only torch and ``_blocks.py``; they never read files, print or know where weights live.
"""
