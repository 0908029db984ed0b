"""Checkpoints and caches as safetensors plus JSON: nested dicts and lists of tensors, numbers and
strings (model and optimizer state, RNG states, a config) written without pickle, so that reading a
file a user was handed runs no code."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .atomic import atomic_path
from ._validation import json_loads

_KEY = "igdefense_state"
_TENSOR = "__tensor__"


class StateFileError(ValueError):
    """A state file is missing, truncated, or not one igdefense wrote."""


def save_state(path: str | os.PathLike, state: Any) -> None:
    """Write ``state`` (dicts with string keys, lists, tuples, tensors, numbers, strings, None) atomically."""
    tensors: dict[str, torch.Tensor] = {}

    def encode(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            key = str(len(tensors))
            tensors[key] = value.detach().cpu().contiguous()
            return {_TENSOR: key}
        if isinstance(value, dict):
            if not all(isinstance(k, (str, int)) for k in value):
                raise TypeError(f"state dict keys must be strings or integers, got {list(value)[:3]}")
            # integer keys (optimizer state is keyed by parameter index) keep their type
            return {"__dict__": [[k, encode(v)] for k, v in value.items()]}
        if isinstance(value, (list, tuple)):
            return [encode(v) for v in value]
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        raise TypeError(f"cannot store a {type(value).__name__} in a state file (tensors, numbers, strings, "
                        "lists and dicts only)")

    skeleton = json.dumps(encode(state))
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={_KEY: skeleton})


def load_state(path: str | os.PathLike) -> Any:
    """Read a file written by :func:`save_state` (tensors on the CPU)."""
    path = Path(path)
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(_KEY)
        tensors = load_file(str(path))
        if raw is None:
            raise ValueError("it has no igdefense state metadata")
        skeleton = json_loads(raw)
    except (SafetensorError, OSError, ValueError) as e:
        raise StateFileError(f"{path} is not a readable igdefense state file (truncated, or made by something "
                             f"else?): {e}") from e

    def decode(value: Any) -> Any:
        if isinstance(value, dict):
            if _TENSOR in value:
                return tensors[value[_TENSOR]]
            return {k: decode(v) for k, v in value["__dict__"]}
        if isinstance(value, list):
            return [decode(v) for v in value]
        return value

    try:
        return decode(skeleton)
    except (KeyError, TypeError, ValueError) as e:
        raise StateFileError(f"{path} has a malformed state layout: {e}") from e
