"""Input checks shared by every entry point: fail early, say what is wrong and how to fix it."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch

MAX_SIDE = 8192  # an image side larger than this is a mistake (or a crafted file's): nothing would fit


def check_file(path: str | os.PathLike, what: str) -> None:
    """Raise FileNotFoundError unless ``path`` is a file; ``what`` says what file is expected."""
    if Path(path).is_dir():
        raise FileNotFoundError(f"{path} is a folder; give the file in it ({what})")
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path} does not exist ({what})")


def in_train_mode(model: torch.nn.Module) -> str | None:
    """What of ``model`` is in train mode, for a message ("the model", "its module 'fc'"), or None if nothing is."""
    name = next((name for name, m in model.named_modules() if m.training), None)
    return None if name is None else f"its module {name!r}" if name else "the model"


def check_images(x: torch.Tensor, value_range: tuple[float, float] | None = (0.0, 1.0),
                 name: str = "images") -> None:
    """Raise ValueError/TypeError unless ``x`` is a finite float (B, C, H, W) batch within ``value_range``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 4:
        hint = " (add a batch dimension with x.unsqueeze(0))" if x.ndim == 3 else ""
        raise ValueError(f"{name} must have shape (batch, channels, height, width), got {tuple(x.shape)}{hint}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a float tensor, got {x.dtype}; convert uint8 images with x.float() / 255")
    if not x.numel():
        return
    # One pass and one device sync (a per-call cost of every defended forward): the extremes propagate
    # NaN and hold any Inf.
    xmin, xmax = torch.stack(torch.aminmax(x.detach())).tolist()
    if not (math.isfinite(xmin) and math.isfinite(xmax)):
        raise ValueError(f"{name} contain NaN or Inf values")
    if value_range is not None:
        lo, hi = value_range
        if xmin < lo - 1e-6 or xmax > hi + 1e-6:
            raise ValueError(f"{name} have values in [{xmin:.3g}, {xmax:.3g}] but the model expects "
                             f"[{lo}, {hi}]; scale them (x / 255) and do not normalise them yourself, "
                             "or pass input_range=None if your model takes another range")


def check_labels(y: torch.Tensor, n_images: int, num_classes: int | None = None, name: str = "labels") -> None:
    """Raise ValueError/TypeError unless ``y`` holds ``n_images`` class indices in [0, num_classes)."""
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of class indices, got {type(y).__name__}")
    if y.ndim != 1 or y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
        raise TypeError(f"{name} must be a 1-D integer tensor of class indices (not one-hot or scores), "
                        f"got {y.dtype} of shape {tuple(y.shape)}")
    if len(y) != n_images:
        raise ValueError(f"{name}: {len(y)} labels for {n_images} images; give one label per image")
    if len(y) and num_classes is not None and not 0 <= int(y.min()) <= int(y.max()) < num_classes:
        raise ValueError(f"{name} range over [{int(y.min())}, {int(y.max())}] but the model has {num_classes} "
                         f"classes: labels must be in [0, {num_classes - 1}]")


def check_number(name: str, value, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False, integer: bool = False) -> None:
    """Raise ValueError (TypeError for a non-number) unless ``value`` is a finite number in the range
    (``low``/``high`` inclusive unless ``*_open``), and an integer when ``integer``."""
    import math
    import numbers

    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if integer and not isinstance(value, numbers.Integral):
        if not float(value).is_integer():
            raise ValueError(f"{name} must be a whole number, got {value!r}")
        raise TypeError(f"{name} must be an int, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if low is not None and (value <= low if low_open else value < low):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low:g}, got {value:g}")
    if high is not None and (value >= high if high_open else value > high):
        raise ValueError(f"{name} must be {'<' if high_open else '<='} {high:g}, got {value:g}")


def json_loads(text: str | bytes):
    """``json.loads`` for what igdefense reads from disk: JSON nested deeper than Python's stack (a
    crafted file) is a ``JSONDecodeError`` like any other malformed JSON, not a ``RecursionError``."""
    try:
        return json.loads(text)
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply to be igdefense's", "", 0) from None
