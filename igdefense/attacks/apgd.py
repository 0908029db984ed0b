"""APGD (Croce & Hein 2020) and AutoAttack, from pyautoattack: ``apgd-ce``, ``apgd-dlr``, ``apgd-cw``
(CW margin), ``apgd-t`` (targeted DLR, 3 target classes), the EOT versions ``apgd-ce-eot`` and
``apgd-dlr-eot`` (gradients averaged over ``eot_iter`` draws of the defense's noise), ``apgd-ce-bpda``
(an IGDefense's gradients through a tau = 1 softmax in place of its saturated pseudo-label: BPDA),
``autoattack`` (standard) and ``autoattack-rand`` (AutoAttack's version for randomized models).

On a randomized defense the APGD attacks (APGD-T for each target class) attack every image and
return two candidates each (the latest step a draw got wrong, the highest-loss step): pyautoattack's
``perturb`` skips an image one noisy forward gets wrong and hands back the clean image for each that
no draw during the attack got wrong. AutoAttack runs as its reference code does, which skips an image
its first noisy forward gets wrong (the cascade's other attacks still attack it). On a deterministic
model ``autoattack-rand`` takes one gradient per step where it would average ``eot_iter`` identical ones:
the same examples (Linf: the same signs), ``eot_iter`` times faster.
"""

from __future__ import annotations

import torch

from ..defense import RandomizedDefense
from .registry import register_attack
from .settings import AttackSettings


def _apgd(model, x, y, s: AttackSettings, loss: str, eot_iter: int = 1):
    from pyautoattack.autopgd_base import APGDAttack

    atk = APGDAttack(model, n_iter=s.n_iter, norm=s.norm, eps=s.eps, seed=s.seed, loss=loss, eot_iter=eot_iter,
                     device=x.device)
    if loss == "cw":  # APGD on the Carlini-Wagner margin: pyautoattack's DLR slot with the CW loss
        atk.loss = "dlr"
        atk.dlr_loss = cw_loss
    if not isinstance(model, RandomizedDefense):
        return atk.perturb(x, y)
    atk.init_hyperparam(x)
    torch.random.manual_seed(s.seed)
    highest_loss, _, _, fooled_once = atk.attack_single_run(x.detach().float(), y)
    return [fooled_once, highest_loss]  # (scoring over draws picks)


def cw_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image CW margin: max_{i != y} z_i - z_y (maximised by the attack)."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.clone().scatter_(1, y[:, None], -torch.inf)
    return others.amax(1) - true


def _apgd_targeted(model, x, y, s: AttackSettings, targets: int = 3):
    from pyautoattack.autopgd_base import APGDAttack_targeted

    atk = APGDAttack_targeted(model, n_iter=s.n_iter, norm=s.norm, eps=s.eps, seed=s.seed, device=x.device)
    atk.n_target_classes = targets
    if not isinstance(model, RandomizedDefense):
        return atk.perturb(x, y)
    atk.init_hyperparam(x)
    torch.random.manual_seed(s.seed)
    x, candidates = x.detach().float(), []
    for rank in range(2, targets + 2):  # the target classes perturb() takes: 2nd, 3rd, ... highest logit
        with torch.no_grad():
            atk.y_target = model(x).sort(dim=1)[1][:, -rank]
        highest_loss, _, _, fooled_once = atk.attack_single_run(x, y)
        candidates += [fooled_once, highest_loss]
    return candidates


def _set_steps(atk, n_iter: int) -> None:
    """``n_iter`` steps for a pyautoattack APGD attack built with another number: its step-size
    checkpoints and its L1 schedule are set from the number when it is built."""
    atk.n_iter = atk.n_iter_orig = n_iter
    atk.n_iter_2, atk.n_iter_min, atk.size_decr = (max(int(f * n_iter), 1) for f in (0.22, 0.06, 0.03))


def _apgd_bpda(model, x, y, s: AttackSettings):
    if not isinstance(model, RandomizedDefense):
        raise ValueError("apgd-ce-bpda attacks a randomized defense through its smooth_gradients() (an "
                         "IGDefense: the gradient of a softer pseudo-label); use apgd-ce for other models")
    with model.smooth_gradients():
        return _apgd(model, x, y, s, "ce")


def _autoattack(model, x, y, s: AttackSettings, version: str):
    from pyautoattack import AutoAttack

    aa = AutoAttack(model, eps=s.eps, norm=s.norm, version=version, device=x.device, seed=s.seed)
    _set_steps(aa.apgd, s.n_iter)
    _set_steps(aa.apgd_targeted, s.n_iter)
    aa.fab.n_iter = s.n_iter
    aa.square.n_queries = s.square_queries
    if version == "rand":
        aa.apgd.eot_iter = s.eot_iter if isinstance(model, RandomizedDefense) else 1
    return aa.run_standard_evaluation(x, y, batch_size=len(x))[0]


APGD, AA = ("n_iter",), ("n_iter", "square_queries")
register_attack("apgd-ce", "white-box", budgets=APGD)(lambda m, x, y, s: _apgd(m, x, y, s, "ce"))
register_attack("apgd-dlr", "white-box", budgets=APGD)(lambda m, x, y, s: _apgd(m, x, y, s, "dlr"))
register_attack("apgd-cw", "white-box", budgets=APGD)(lambda m, x, y, s: _apgd(m, x, y, s, "cw"))
register_attack("apgd-t", "white-box", budgets=APGD, version=2)(_apgd_targeted)  # 2: every image, randomized
register_attack("apgd-ce-eot", "white-box", budgets=APGD)(lambda m, x, y, s: _apgd(m, x, y, s, "ce", s.eot_iter))
register_attack("apgd-dlr-eot", "white-box", budgets=APGD)(lambda m, x, y, s: _apgd(m, x, y, s, "dlr", s.eot_iter))
register_attack("apgd-ce-bpda", "white-box", budgets=APGD)(_apgd_bpda)
register_attack("autoattack", "white-box", budgets=AA)(lambda m, x, y, s: _autoattack(m, x, y, s, "standard"))
register_attack("autoattack-rand", "white-box", budgets=AA)(lambda m, x, y, s: _autoattack(m, x, y, s, "rand"))
