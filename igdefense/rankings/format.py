"""Per-class neuron importance rankings: the data the defense masks with, saved once, reloaded safely."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .._version import __version__
from ..atomic import atomic_path
from .._validation import MAX_SIDE, check_file, json_loads
from ..split import Split

_META_KEY = "igdefense"


def _release(version: str) -> tuple[int, ...] | None:
    """(major, minor, patch) of a version like "0.2.0" (a suffix like "rc1" aside); None if not one."""
    found = re.match(r"(\d+)\.(\d+)\.(\d+)", version)
    return tuple(map(int, found.groups())) if found else None


class RankingsError(ValueError):
    """A rankings file is unreadable, corrupt, or made for a different model."""


def _digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()


@dataclass
class Rankings:
    """Importance of each neuron for each class, and what it was computed on.

    Attributes:
        importance: float32 tensor [classes, neurons]; larger means more important.
        method: "lo-ir" or "cd-ir".
        layer: the masked site, e.g. "fc:input" (see :class:`igdefense.split.Site`).
        head_fingerprint: hash of the model's classifier weights the rankings belong to.
        input_shape: shape of one input image, e.g. (3, 32, 32).
        class_names: one name per class (may be generic "0", "1", ...).
        probe: free-text description of the probe set.
        version: igdefense version that computed the rankings.
        made_by: a digest of what computed them (model weights, probe data, method), where a cache or
            a sweep folder needs to tell its own rankings from another run's; "" when not recorded.
    """

    importance: torch.Tensor
    method: str
    layer: str
    head_fingerprint: str
    input_shape: tuple[int, ...]
    class_names: list[str] = field(default_factory=list)
    probe: str = ""
    version: str = __version__
    made_by: str = ""

    def __post_init__(self):
        # (a file's metadata is data from disk: every field's type and range is checked, not assumed)
        for name in ("method", "layer", "head_fingerprint", "probe", "version", "made_by"):
            if not isinstance(getattr(self, name), str):
                raise RankingsError(f"{name} must be a string, got {getattr(self, name)!r}")
        release = _release(self.version)
        if release is None:
            raise RankingsError(f"version {self.version!r} is not an igdefense version")
        if release > _release(__version__):
            raise RankingsError(f"made by igdefense {self.version}, newer than this one ({__version__}): upgrade "
                                "igdefense, or recompute them (igdefense rank ...)")
        shape = self.input_shape
        if not isinstance(shape, (list, tuple)) or len(shape) != 3 or not all(
                isinstance(s, int) and not isinstance(s, bool) and 1 <= s <= MAX_SIDE for s in shape):
            raise RankingsError(f"input_shape must be one image's (channels, height, width), each 1..{MAX_SIDE}, "
                                f"got {shape!r}")
        if not isinstance(self.class_names, list) or not all(isinstance(c, str) for c in self.class_names):
            raise RankingsError(f"class_names must be a list of strings, got {self.class_names!r}")
        self.importance = torch.as_tensor(self.importance).detach().float().cpu().contiguous()
        if self.importance.ndim != 2:
            raise RankingsError(f"importance must be [classes, neurons], got {tuple(self.importance.shape)}")
        if not torch.isfinite(self.importance).all():
            raise RankingsError("importance contains NaN or Inf")
        if not self.class_names:
            self.class_names = [str(c) for c in range(self.num_classes)]
        if len(self.class_names) != self.num_classes:
            raise RankingsError(f"{len(self.class_names)} class names for {self.num_classes} classes")
        self.input_shape = tuple(int(s) for s in self.input_shape)

    @property
    def num_classes(self) -> int:
        return self.importance.shape[0]

    @property
    def num_neurons(self) -> int:
        return self.importance.shape[1]

    def top_k(self, k: int) -> torch.Tensor:
        """Indices [classes, k] of each class's k most important neurons (ties: lower index first)."""
        if not 1 <= k <= self.num_neurons:
            raise ValueError(f"k={k} must be between 1 and the number of neurons ({self.num_neurons})")
        return torch.sort(self.importance, dim=1, descending=True, stable=True).indices[:, :k]

    def mask(self, k: int) -> torch.Tensor:
        """The 0/1 matrix M [classes, neurons] with M[c, j] = 1 iff j is in class c's top k."""
        m = torch.zeros_like(self.importance)
        return m.scatter_(1, self.top_k(k), 1.0)

    def randomized(self, seed: int = 0) -> "Rankings":
        """Same metadata, random importance: the random-k mask baseline of the paper's ablation."""
        gen = torch.Generator("cpu").manual_seed(seed)
        return Rankings(torch.rand(self.importance.shape, generator=gen), method=f"random(seed={seed})",
                        layer=self.layer, head_fingerprint=self.head_fingerprint, input_shape=self.input_shape,
                        class_names=self.class_names, probe="none")

    def check_matches(self, split: Split, fingerprint: str) -> None:
        """Raise :class:`RankingsError` unless these rankings were made for this split of this model."""
        problems = []
        if self.num_neurons != split.num_neurons:
            problems.append(f"{self.num_neurons} neurons vs the model's {split.num_neurons} at {split.site}")
        if self.num_classes != split.num_classes:
            problems.append(f"{self.num_classes} classes vs the model's {split.num_classes}")
        if self.head_fingerprint != fingerprint:
            problems.append(f"head fingerprint {self.head_fingerprint} vs the model's {fingerprint} "
                            "(different classifier weights)")
        if problems:
            raise RankingsError("these rankings were made for another model: " + "; ".join(problems)
                                + ". Recompute them for this model (igdefense rank ...).")

    def save(self, path: str | os.PathLike) -> None:
        """Write to a safetensors file with JSON metadata, atomically (no half-written file)."""
        meta = {"method": self.method, "layer": self.layer, "head_fingerprint": self.head_fingerprint,
                "input_shape": list(self.input_shape), "class_names": self.class_names,
                "probe": self.probe, "version": self.version, "made_by": self.made_by,
                "sha256": _digest(self.importance)}
        with atomic_path(path) as tmp:
            save_file({"importance": self.importance}, str(tmp), metadata={_META_KEY: json.dumps(meta)})

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Rankings":
        """Read a file written by :meth:`save`; a truncated or corrupt file raises RankingsError."""
        path = Path(path)
        try:
            check_file(path, "a rankings file written by igdefense rank")
        except FileNotFoundError as e:
            raise RankingsError(str(e)) from None
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                raw = (f.metadata() or {}).get(_META_KEY)
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise RankingsError(f"{path} is not a readable rankings file (truncated or corrupt?): {e}. "
                                "Recompute it with `igdefense rank`.") from e
        if raw is None or "importance" not in tensors:
            raise RankingsError(f"{path} is a safetensors file but not an igdefense rankings file")
        try:
            meta = json_loads(raw)
            known = {f.name for f in dataclasses.fields(cls)} - {"importance"}
            if not isinstance(meta, dict):
                raise ValueError("not a JSON object")
            if unknown := sorted(set(meta) - known - {"sha256"}):
                raise ValueError(f"unknown fields {unknown}")
            if "sha256" not in meta:
                raise ValueError("no sha256 of its importance values, so they cannot be checked")
        except (ValueError, TypeError) as e:
            raise RankingsError(f"{path} has malformed igdefense metadata ({e})") from e
        importance = tensors["importance"]
        if _digest(importance.float()) != meta.pop("sha256"):
            raise RankingsError(f"{path} is corrupt: its importance values do not match their checksum")
        try:
            return cls(importance=importance, **meta)
        except (TypeError, ValueError, AttributeError) as e:
            raise RankingsError(f"{path} has malformed igdefense metadata ({e})") from e
