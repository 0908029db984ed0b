"""The attacks :func:`igdefense.evaluate` runs, by name. Each returns adversarial candidates for a
batch; an image survives an attack only if the model is right on every candidate.

White-box (on the model evaluated): ``apgd-ce``, ``apgd-dlr``, ``apgd-cw`` (CW margin),
``apgd-t`` (targeted DLR, 3 target classes), the EOT versions ``apgd-ce-eot``, ``apgd-dlr-eot``
(gradients averaged over ``eot_iter`` draws of the defense's noise), ``apgd-ce-bpda`` (an
IGDefense's gradients through a tau = 1 softmax in place of its saturated pseudo-label: BPDA),
``autoattack`` (standard) and ``autoattack-rand`` (AutoAttack's version for randomized models);
``fgsm``, ``bim`` (10 steps of eps/4) and ``pgd`` (the same from a random start), the weaker
classic attacks some papers report (:mod:`igdefense.eval.pgd`).
Adaptive: ``adaptive`` runs the defense's own attack on its mechanism (``model.adaptive_attack``;
an IGDefense's: :mod:`igdefense.eval.adaptive`, pass 1 and pass 2 under a fixed mask).
Black-box: ``square`` (5,000 queries) and ``rays`` (decision-based, 10,000 queries).
Transfer (needs ``base_model``): ``transfer`` crafts APGD-CE, APGD-CW, targeted APGD-DLR and
AutoAttack examples on the undefended base model (``AttackSettings.transfer_from`` chooses).

With ``AttackSettings.cache`` set, the examples crafted on a deterministic model (no ``reseed``:
not an IGDefense) are stored there as safetensors (no pickle), keyed by the model's weights, the
batch, the settings and the pyautoattack version: the base model's AutoAttack run then also serves
as the transfer source for every defended model. A cached file must hold candidates of the batch's
shape inside the eps-ball, match the seal written with them (:mod:`igdefense._seal`), and fool the
model (re-classified on reading) on every image it says they fooled, or it is recomputed.

On a randomized defense the APGD attacks attack every image and return two candidates (the latest
step a draw got wrong, the highest-loss step); AutoAttack runs as its reference code does, which
skips an image its first noisy forward gets wrong (the cascade's other attacks still attack it).
"""

from __future__ import annotations

import hashlib
import logging
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import nn

from .._hooks import model_device
from .._identity import RESULTS_VERSION, tensor_digest
from .._seal import seal, sealed
from .._state import StateFileError, load_state, save_state
from .._validation import check_number
from ..defense import IGDefense, RandomizedDefense
from ..precision import Autocast, check_precision, compute_dtype, precision_name

log = logging.getLogger(__name__)

WHITE_BOX = ("apgd-ce", "apgd-dlr", "apgd-cw", "apgd-t", "apgd-ce-eot", "apgd-dlr-eot", "apgd-ce-bpda", "autoattack",
             "autoattack-rand", "fgsm", "bim", "pgd", "adaptive")
BLACK_BOX = ("square", "rays")
TRANSFER = ("transfer",)
ATTACKS = WHITE_BOX + BLACK_BOX + TRANSFER
TRANSFER_SOURCES = ("apgd-ce", "apgd-cw", "apgd-t", "autoattack")  # the paper's transfer attacks (RayS aside)
BUDGETS = ("n_iter", "square_queries", "rays_queries", "pgd_steps", "adaptive_steps", "adaptive_targets",
           "adaptive_eot")  # AttackSettings' per-attack budgets


@dataclass
class AttackSettings:
    """Budgets and options of every attack. The defaults are the standard ones (AutoAttack's own
    budgets included); smaller budgets are for quick tests, never for reported numbers."""

    eps: float = 8 / 255
    norm: str = "Linf"
    seed: int = 0
    eot_iter: int = 20  # noise draws per gradient in the *-eot attacks and autoattack-rand (the paper: 20)
    # Draws of a randomized defense's noise each final example (and clean image) is classified under
    # (igdefense.eval.scoring): odd, so that a majority is never a tie; 9 puts an image right with
    # probability 0.7 per draw on the majority side with probability 0.90 (0.84 with 5, 0.95 with 15).
    draws: int = 9
    n_iter: int = 100  # APGD steps, in AutoAttack too (its APGD, APGD-T and FAB)
    square_queries: int = 5_000  # Square, in AutoAttack too
    rays_queries: int = 10_000
    pgd_steps: int = 10  # BIM and PGD steps of eps / 4 (the refinement papers do not state theirs)
    # ``adaptive``, a defense's own attack (IGDefense: igdefense.eval.adaptive): steps per run, wrong
    # classes targeted, noise draws per pass-1 gradient
    adaptive_steps: int = 50
    adaptive_targets: int = 2
    adaptive_eot: int = 5
    base_model: nn.Module | None = None  # source of transfer attacks
    transfer_from: tuple[str, ...] = TRANSFER_SOURCES  # attacks crafted on base_model by "transfer"
    cache: Path | None = None  # directory memoizing examples crafted on deterministic models
    # What the attacks compute their gradients and queries in (igdefense.precision: "fp32", "bf16",
    # "auto"); the evaluation re-classifies, checks and scores every candidate in the model's own.
    # float32 until benchmarks/precision_strength.py shows bfloat16 crafting as strong on a model.
    precision: str = "fp32"

    def __post_init__(self) -> None:
        if self.norm not in ("Linf", "L2", "L1"):
            raise ValueError(f"norm must be 'Linf', 'L2' or 'L1', got {self.norm!r}")
        check_number("eps", self.eps, low=0)  # (0: no perturbation, a control)
        if self.norm == "Linf" and self.eps > 1:
            raise ValueError(f"eps={self.eps:g} is larger than the whole [0, 1] range of an image: an L-inf eps is "
                             f"in [0, 1] units (8/255 = {8 / 255:.4f}); did you mean {self.eps:g}/255?")
        check_number("seed", self.seed, integer=True, low=0)
        for name in ("eot_iter", "draws", *BUDGETS):
            check_number(name, getattr(self, name), integer=True, low=1)
        if self.base_model is not None and not isinstance(self.base_model, nn.Module):
            raise TypeError(f"base_model must be the undefended model (an nn.Module), got "
                            f"{type(self.base_model).__name__}")
        self.transfer_from = tuple(self.transfer_from)
        if unknown := [a for a in self.transfer_from if a not in ATTACKS or a in ("transfer", "adaptive")]:
            raise ValueError(f"transfer_from names {unknown}: attacks crafted on base_model, from {ATTACKS} less "
                             f"transfer and adaptive (default {list(TRANSFER_SOURCES)})")
        self.cache = Path(self.cache) if self.cache is not None else None
        check_precision(self.precision)

    def crafting_precision(self, device: torch.device) -> str:
        """``"fp32"`` or ``"bf16"``: what the attacks craft in on ``device``."""
        return precision_name(compute_dtype(self.precision, device))


def _apgd(model, x, y, s: AttackSettings, loss: str, eot_iter: int = 1, n_iter: int | None = None):
    from pyautoattack.autopgd_base import APGDAttack

    atk = APGDAttack(model, n_iter=n_iter or s.n_iter, norm=s.norm, eps=s.eps, seed=s.seed, loss=loss,
                     eot_iter=eot_iter, device=x.device)
    if loss == "cw":  # APGD on the Carlini-Wagner margin: pyautoattack's DLR slot with the CW loss
        atk.loss = "dlr"
        atk.dlr_loss = _cw_loss
    if not isinstance(model, RandomizedDefense):
        return atk.perturb(x, y)
    # A randomized defense: perturb() would skip each image one noisy forward gets wrong and hand back
    # the clean image for each that no draw during the attack got wrong. Attack every image and keep
    # both the latest step a draw got wrong and the highest-loss step: scoring over draws picks.
    atk.init_hyperparam(x)
    torch.random.manual_seed(s.seed)
    highest_loss, _, _, fooled_once = atk.attack_single_run(x.detach().float(), y)
    return [fooled_once, highest_loss]


def _apgd_bpda(model, x, y, s: AttackSettings):
    if not isinstance(model, RandomizedDefense):
        raise ValueError("apgd-ce-bpda attacks a randomized defense through its smooth_gradients() (an "
                         "IGDefense: the gradient of a softer pseudo-label); use apgd-ce for other models")
    with model.smooth_gradients():
        return _apgd(model, x, y, s, "ce")


def _cw_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image CW margin: max_{i != y} z_i - z_y (maximised by the attack)."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.clone().scatter_(1, y[:, None], -torch.inf)
    return others.amax(1) - true


def _apgd_targeted(model, x, y, s: AttackSettings, targets: int = 3):
    from pyautoattack.autopgd_base import APGDAttack_targeted

    atk = APGDAttack_targeted(model, n_iter=s.n_iter, norm=s.norm, eps=s.eps, seed=s.seed, device=x.device)
    atk.n_target_classes = targets
    return atk.perturb(x, y)


def _autoattack(model, x, y, s: AttackSettings, version: str = "standard"):
    from pyautoattack import AutoAttack

    aa = AutoAttack(model, eps=s.eps, norm=s.norm, version=version, device=x.device, seed=s.seed)
    aa.apgd.n_iter = aa.apgd_targeted.n_iter = aa.fab.n_iter = s.n_iter
    aa.square.n_queries = s.square_queries
    if version == "rand":
        aa.apgd.eot_iter = s.eot_iter
    return aa.run_standard_evaluation(x, y, batch_size=len(x))[0]


def _sign_gradient(model, x, y, s: AttackSettings, name: str):
    from .pgd import sign_gradient_attack

    if s.norm != "Linf":
        raise ValueError(f"{name} is an L-inf attack here; use apgd-ce for {s.norm}")
    if name == "fgsm":
        return sign_gradient_attack(model, x, y, s.eps, steps=1, step_size=s.eps, random_start=False)
    return sign_gradient_attack(model, x, y, s.eps, steps=s.pgd_steps, step_size=s.eps / 4,
                                random_start=name == "pgd", seed=s.seed)


def _square(model, x, y, s: AttackSettings):
    from pyautoattack.square import SquareAttack

    atk = SquareAttack(model, p_init=0.8, n_queries=s.square_queries, eps=s.eps, norm=s.norm, n_restarts=1,
                       seed=s.seed, device=x.device, resc_schedule=False)
    return atk.perturb(x, y)


def _rays(model, x, y, s: AttackSettings):
    from .rays import RayS

    if s.norm != "Linf":
        raise ValueError("RayS is an L-inf attack")
    return RayS(model, s.eps, queries=s.rays_queries).perturb(x, y)


def adaptive_attack_of(model: nn.Module) -> Callable | None:
    """The defense's own attack, ``(x, y, settings) -> [candidates]``: its method ``adaptive_attack``,
    else for an IGDefense the mask-aware attack (:mod:`igdefense.eval.adaptive`); None for other models."""
    own = getattr(model, "adaptive_attack", None)
    if callable(own):
        return own
    if not isinstance(model, IGDefense):
        return None
    from .adaptive import mask_aware_attack

    def attack(x, y, s: AttackSettings) -> list[torch.Tensor]:
        start = None if s.base_model is None else run_attack("apgd-ce", s.base_model, x, y, s)[0]
        return mask_aware_attack(model, x, y, s, transfer_start=start)
    return attack


def _adaptive(model, x, y, s: AttackSettings):
    attack = adaptive_attack_of(model)
    if attack is None:
        raise ValueError(f"{type(model).__name__} names no adaptive attack of its own: a defense gives one as a method "
                         "adaptive_attack(x, y, settings) -> list of candidate batches (IGDefense has one)")
    return attack(x, y, s)


def _transfer(model, x, y, s: AttackSettings):
    if s.base_model is None:
        raise ValueError("the transfer attack needs base_model= (the undefended model)")
    unknown = [name for name in s.transfer_from if name not in _RUNNERS or name == "transfer"]
    if unknown or not s.transfer_from:
        raise ValueError(f"transfer_from must name attacks to craft on the base model, from {ATTACKS[:-1]}; "
                         f"got {s.transfer_from}")
    return [c for name in s.transfer_from for c in run_attack(name, s.base_model, x, y, s)]


_RUNNERS: dict[str, Callable] = {
    "apgd-ce": lambda m, x, y, s: _apgd(m, x, y, s, "ce"),
    "apgd-dlr": lambda m, x, y, s: _apgd(m, x, y, s, "dlr"),
    "apgd-cw": lambda m, x, y, s: _apgd(m, x, y, s, "cw"),
    "apgd-t": _apgd_targeted,
    "apgd-ce-eot": lambda m, x, y, s: _apgd(m, x, y, s, "ce", s.eot_iter),
    "apgd-dlr-eot": lambda m, x, y, s: _apgd(m, x, y, s, "dlr", s.eot_iter),
    "apgd-ce-bpda": _apgd_bpda,
    "autoattack": _autoattack,
    "autoattack-rand": lambda m, x, y, s: _autoattack(m, x, y, s, "rand"),
    "fgsm": lambda m, x, y, s: _sign_gradient(m, x, y, s, "fgsm"),
    "bim": lambda m, x, y, s: _sign_gradient(m, x, y, s, "bim"),
    "pgd": lambda m, x, y, s: _sign_gradient(m, x, y, s, "pgd"),
    "square": _square,
    "rays": _rays,
    "transfer": _transfer,
    "adaptive": _adaptive,
}


def check_in_ball(name: str, x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> None:
    """Refuse examples outside the L-inf eps-ball around ``x``: a result on them would not be a result."""
    if (x_adv - x).abs().amax() > eps + 1e-5:
        raise RuntimeError(f"{name} left the eps-ball; refusing to report a result")


def run_attack(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, settings: AttackSettings
               ) -> list[torch.Tensor]:
    """Adversarial candidates of attack ``name`` for the batch (x, y): a list of tensors like x."""
    if name not in _RUNNERS:
        raise ValueError(f"unknown attack {name!r}; choose from {ATTACKS}")
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
        out = _RUNNERS[name](attacked, x.contiguous(), y, settings)
    out = out if isinstance(out, list) else [out]
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
    if s.cache is None or isinstance(model, RandomizedDefense) or name == "transfer":
        return None
    crafted_in = () if dtype == torch.float32 else (precision_name(dtype),)  # (float32 files keep their names)
    h = hashlib.sha256(repr((name, s.eps, s.norm, s.seed, s.eot_iter, *(getattr(s, b) for b in BUDGETS),
                             RESULTS_VERSION, attack_library_version(), *crafted_in)).encode())
    for t in [*model.state_dict().values(), x, y]:
        h.update(tensor_digest(t).encode())
    return s.cache / f"{name}-{h.hexdigest()[:32]}.safetensors"  # (a Path: AttackSettings converts it)
