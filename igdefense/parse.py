"""The command line's value types: each parses one option's text, or says in one line what is wrong."""

from __future__ import annotations

import argparse
import math
from pathlib import Path


def pathname(text: str) -> Path:
    """A file or folder name, not empty (an empty one would mean the current folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path; give a file or folder name")
    return Path(text)


def fraction(text: str) -> float:
    """Parse '8/255' or '0.03' (finite, >= 0)."""
    num, _, den = text.partition("/")
    try:
        value = float(num) / float(den or 1)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number or a fraction like 8/255") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number >= 0")
    return value


def radius(text: str) -> float:
    """A size on [0, 1] images (an L-inf radius, a noise std): '8/255' or '0.03', at most 1."""
    value = fraction(text)
    if value > 1:
        hint = f"did you mean {text}/255?" if "/" not in text else f"images are in [0, 1] units (8/255 = {8 / 255:.4f})"
        raise argparse.ArgumentTypeError(f"{text!r} is more than the whole [0, 1] range of an image; {hint}")
    return value


def whole(low: int, high: int = 2 ** 31 - 1):
    """Whole numbers in [low, high] (by default at most 2^31 - 1: beyond, a count is a typing mistake)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text!r} must be >= {low}" if value < low else
                                             f"{text!r} must be at most {high}")
        return value
    parse.__name__ = "whole number"
    return parse


count, natural = whole(1), whole(0)  # (>= 1: images, steps, k; >= 0: seeds)


def real(low: float = -math.inf, high: float = math.inf):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not (math.isfinite(value) and low <= value <= high):
            raise argparse.ArgumentTypeError(f"{text!r} must be a finite number in [{low:g}, {high:g}]")
        return value
    parse.__name__ = "number"
    return parse


def one_of(*choices: str):
    """One of ``choices``, as typed."""
    def parse(text: str) -> str:
        if text not in choices:
            raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(choices)}")
        return text
    parse.__name__ = "choice"
    return parse


def listof(parse):
    def parse_all(text: str) -> list:
        return [parse(v) for v in text.split(",") if v]
    parse_all.__name__ = "comma-separated list"
    return parse_all


def severities(text: str) -> tuple[int, ...]:
    """'1-5' or '3,5' -> (1, 2, 3, 4, 5) or (3, 5)."""
    try:
        if "-" in text:
            lo, hi = (int(v) for v in text.split("-"))
            values = tuple(range(lo, hi + 1))
        else:
            values = tuple(int(v) for v in text.split(",") if v)
    except ValueError:
        values = ()
    if not values or any(v not in range(1, 6) for v in values):
        raise argparse.ArgumentTypeError(f"severities: {text!r} is not like 1-5 or 3,5 (values 1..5)")
    return values
