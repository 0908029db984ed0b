"""CIFAR-10-C-style corruptions (Hendrycks & Dietterich, ICLR 2019) with the CIFAR parameters, batched.

The 19 corruptions of the CIFAR-10-C generation script (``make_cifar_c.py``), reproduced operation
by operation in torch (ImageMagick's motion blur included), so that no system library is needed.
CIFAR-10-C itself has no seed: results on images made here are "CIFAR-10-C-style, CIFAR
parameters, seed S", never "CIFAR-10-C".

    >>> from igdefense.corruptions import corrupt
    >>> foggy = corrupt(images, "fog", severity=3, seed=0)  # (B, 3, H, W) in [0, 1]
"""

from .registry import CORRUPTIONS, MAIN, NAMES, SEVERITIES, check_name, check_severity, corrupt
from .dataset import CorruptedCIFAR10, corrupted_loaders, write_dataset

__all__ = ["CORRUPTIONS", "MAIN", "NAMES", "SEVERITIES", "check_name", "check_severity", "corrupt", "CorruptedCIFAR10",
           "corrupted_loaders", "write_dataset"]
