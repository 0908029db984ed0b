"""Running an attack by name on a batch: in the precision the settings ask for, and with the examples
crafted on a deterministic model memoized.

With ``AttackSettings.cache`` set, the examples crafted on a deterministic model (no ``reseed``:
not an IGDefense) are stored there as safetensors (no pickle), keyed by the model (every module's
class and settings, its tensors by name), the batch, the settings and the attack's and pyautoattack's
versions: the base model's AutoAttack run then also serves
as the transfer source for every defended model. A cached file must hold candidates of the batch's
shape inside the eps-ball, match the seal written with it (:mod:`igdefense._seal`), and fool the
model (re-classified on reading) on every image it says they fooled, or it is recomputed.
"""

from __future__ import annotations

import hashlib
import logging
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from .._hooks import model_device
from .._identity import RESULTS_VERSION, plain_settings, tensor_digest
from .._seal import seal, sealed
from .._state import StateFileError, load_state, save_state
from ..defense import IGDefense, RandomizedDefense
from ..precision import Autocast, compute_dtype, precision_name
from .registry import get_attack
from .settings import AttackSettings, budget_fields

log = logging.getLogger(__name__)


def check_in_ball(name: str, x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> None:
    """Refuse examples outside the L-inf eps-ball around ``x``, or not finite (a NaN is in no ball, and a
    model's answer on it is arbitrary): a result on them would not be a result."""
    if not torch.isfinite(x_adv).all():
        raise RuntimeError(f"{name} crafted examples that are not finite (NaN or Inf); refusing to report a result")
    if (x_adv - x).abs().amax() > eps + 1e-5:
        raise RuntimeError(f"{name} left the eps-ball; refusing to report a result")


def run_attack(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, settings: AttackSettings
               ) -> list[torch.Tensor]:
    """Adversarial candidates of attack ``name`` for the batch (x, y): a list of tensors like x."""
    attack = get_attack(name)
    if model_device(model) != x.device:  # the images are on the evaluated model's device: so must base_model be
        raise ValueError(f"{name}: the images are on {x.device} but the attacked model is on {model_device(model)}; "
                         "a base_model= (transfer) must be on the evaluated model's device")
    dtype = compute_dtype(settings.precision, x.device)
    path = _memo_path(name, model, x, y, settings, dtype)
    if path is not None and path.exists():
        cached = _read_cached(path, model, x, y, settings)
        if cached is not None:
            return cached
    with _crafting_in(model, dtype) as attacked:
        out = attack.run(attacked, x.contiguous(), y, settings)
        out = out if isinstance(out, list) else [out]
        if dtype != torch.float32 and not isinstance(model, RandomizedDefense):
            out = _recraft_skipped(attack, model, attacked, x, y, settings, out)
    if path is not None:
        out = [c.detach() for c in out]
        fooled = [_fooled(model, c, y) for c in out]
        save_state(path, {"candidates": out, "fooled": fooled,
                          "seal": seal(settings.cache, path.name, tensor_digest(*out, *fooled))})
    return out


@contextmanager
def _crafting_in(model: nn.Module, dtype: torch.dtype) -> Iterator[nn.Module]:
    """``model`` as an attack crafting in ``dtype`` sees it (its outputs in float32 or its own dtype)."""
    if dtype == torch.float32:
        yield model
    elif isinstance(model, IGDefense):  # its pseudo-label stays float32, its own attack reaches its parts
        with model.computing_in(dtype):
            yield model
    else:
        yield Autocast(model, dtype)


def _recraft_skipped(attack, model: nn.Module, attacked: nn.Module, x: torch.Tensor, y: torch.Tensor,
                     settings: AttackSettings, out: list[torch.Tensor]) -> list[torch.Tensor]:
    """The candidates with those of the images the model gets right but its lower-precision copy got wrong
    crafted again in float32: attacks skip an image the model they attack gets wrong (and hand it back
    clean), and the evaluation judges it in float32, where it would stand unattacked."""
    with torch.no_grad():
        skipped = (model(x).argmax(1) == y) & (attacked(x).argmax(1) != y)
    if not skipped.any():
        return out
    again = attack.run(model, x[skipped].contiguous(), y[skipped], settings)
    again = again if isinstance(again, list) else [again]
    out = [c.clone() for c in out]
    for c, a in zip(out, again):
        c[skipped] = a.to(c.dtype)
    return out


def _fooled(model: nn.Module, candidates: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return (model(candidates).argmax(1) != y).cpu()


def _read_cached(path: Path, model: nn.Module, x: torch.Tensor, y: torch.Tensor, s: AttackSettings
                 ) -> list[torch.Tensor] | None:
    """The cached candidates, or None (recomputed) when the file is unreadable, does not fit the batch,
    does not match the seal written with it (:mod:`igdefense._seal`), or holds a candidate the model
    gets right on an image the file says it fooled (another file put in its place)."""
    try:
        state = load_state(path)
    except StateFileError:
        return None
    cached, fooled = (state.get("candidates"), state.get("fooled")) if isinstance(state, dict) else (None, None)
    if not isinstance(cached, list) or not cached or not isinstance(fooled, list) or len(fooled) != len(cached) \
            or not all(isinstance(c, torch.Tensor) and c.shape == x.shape and c.dtype == x.dtype
                       and isinstance(f, torch.Tensor) and f.shape == y.shape and f.dtype == torch.bool
                       for c, f in zip(cached, fooled)):
        return None
    if not sealed(s.cache, path.name, tensor_digest(*cached, *fooled), state.get("seal")):
        log.warning("%s is not what this cache wrote (its seal differs): crafting its examples again", path)
        return None
    cached = [c.to(x.device) for c in cached]
    if s.norm == "Linf" and any((c - x).abs().amax() > s.eps + 1e-5 for c in cached if c.numel()):
        return None
    if any((f & ~_fooled(model, c, y)).any() for c, f in zip(cached, fooled)):
        log.warning("%s holds examples the model classifies right where the file says they fooled it: crafting "
                    "them again", path)
        return None
    return cached


@lru_cache(maxsize=1)
def attack_library_version() -> str:
    """pyautoattack's version: its attacks' examples (and so every stored result) depend on it. Without
    its install record (a copy put on the path, as on a device machine) the package's own ``__version__``."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pyautoattack")
    except PackageNotFoundError:
        try:
            import pyautoattack
        except ImportError:
            return "unknown"
        return str(getattr(pyautoattack, "__version__", "unknown"))


def _memo_path(name: str, model: nn.Module, x, y, s: AttackSettings, dtype: torch.dtype = torch.float32
               ) -> Path | None:
    """Cache file of attack ``name`` crafted in ``dtype`` on this deterministic model and batch, or None
    (no caching)."""
    if s.cache is None or isinstance(model, RandomizedDefense) or get_attack(name).kind == "transfer":
        return None
    crafted_in = () if dtype == torch.float32 else (precision_name(dtype),)  # (float32 files keep their names)
    h = hashlib.sha256(repr((name, get_attack(name).version, s.eps, s.norm, s.seed, s.eot_iter,
                             *(getattr(s, b) for b in budget_fields()), RESULTS_VERSION, attack_library_version(),
                             *crafted_in)).encode())
    # The model by its every module's class and plain settings, and its tensors by name: a wrapper with no
    # weights of its own (a logit scale, an input transform) is another model than the one it wraps.
    h.update(repr([(n, type(m).__qualname__, m.training, plain_settings(m))
                   for n, m in model.named_modules()]).encode())
    for key, t in model.state_dict().items():
        h.update(key.encode())
        h.update(tensor_digest(t).encode())
    for t in (x, y):
        h.update(tensor_digest(t).encode())
    return s.cache / f"{name}-{h.hexdigest()[:32]}.safetensors"  # (a Path: AttackSettings converts it)
