"""defocus: remove defocus blur from photos with trained networks.

The public Python API lives in :mod:`defocus_cli.api`; importing this package does not import torch.
"""

from defocus_cli._version import __version__

__all__ = ["__version__"]
