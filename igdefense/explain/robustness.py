"""Do saliency maps see an attack? (arXiv 2412.11119 found that IoU and RMSE between clean and
adversarial Grad-CAM / SmoothGrad / LIME maps barely move under FGSM and BIM.)

For each attack, every method and metric: the distance between the clean and the adversarial
image's maps, next to a matched control, random +-eps sign noise of the same L-inf size. A metric
"sees the attack" when the attack moves it beyond what that noise does (paired 95% interval over
images). Each map explains the model's own prediction on its image; LIME segments each image
itself, as the lime package does, so part of its change is the superpixels' (the control has it too).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from .._hooks import model_device
from .._validation import check_images, check_labels
from ..defense import RandomizedDefense
from ..attacks import AttackSettings, check_in_ball, run_attack
from ..stats import paired_difference, paired_mean_difference
from .maps import MAP_METHODS, explain, explained_class
from .metrics import LOWER_IS_CLOSER, compare


@dataclass
class Study:
    """Per-image results of :func:`explanation_robustness` (all tensors (N,), on the CPU)."""

    correct: dict[str, torch.Tensor] = field(default_factory=dict)  # "clean", each attack, "noise"
    flipped: dict[str, torch.Tensor] = field(default_factory=dict)  # attack or "noise": prediction changed
    # metrics[perturbation][method][metric]: (N,) distances between the clean and the perturbed maps
    metrics: dict[str, dict[str, dict[str, torch.Tensor]]] = field(default_factory=dict)
    sensitivity: dict[str, torch.Tensor] = field(default_factory=dict)  # method: max relative map change under noise

    def summary(self) -> dict:
        """Accuracies, and per attack, method and metric: the mean (95% interval) over all images, over
        the flipped and the unflipped ones, under the noise control, attack - noise (paired) and
        :func:`separation` (AUROC attack vs noise)."""
        out: dict = {"accuracy": {k: 100 * v.float().mean().item() for k, v in self.correct.items()}, "attacks": {}}
        for attack in (a for a in self.metrics if a != "noise"):
            flipped = self.flipped[attack]
            out["attacks"][attack] = {"flipped": int(flipped.sum()), "n": len(flipped), "methods": {
                method: {metric: {"all": _mean(v), "flipped": _mean(v[flipped]), "not_flipped": _mean(v[~flipped]),
                                  "noise": _mean(self.metrics["noise"][method][metric]),
                                  "attack_minus_noise": _difference(self.metrics["noise"][method][metric], v),
                                  "auroc": separation(v, self.metrics["noise"][method][metric], metric)}
                         for metric, v in values.items()}
                for method, values in self.metrics[attack].items()}}
            drop = paired_difference(self.correct["clean"], self.correct[attack])
            out["attacks"][attack]["accuracy_drop"] = str(drop)
        out["sensitivity_max"] = {method: _mean(v[~v.isnan()]) for method, v in self.sensitivity.items()}
        return out


def sensitivity(model: nn.Module, images: torch.Tensor, method: str, *, radius: float = 0.02, samples: int = 5,
                seed: int = 0, clean_maps: torch.Tensor | None = None, **explain_options) -> torch.Tensor:
    """captum's sensitivity_max (Yeh et al. 2019), for maps: per image, the largest
    ||map(x') - map(x)|| / ||map(x)|| over ``samples`` draws of x' = clip(x + U(-radius, radius)),
    each explaining x's predicted class. (captum's own function needs maps shaped like the input.)
    NaN where map(x) is empty (all zero, e.g. Grad-CAM with no positive evidence): a relative change is
    undefined there (captum divides by 1 instead, which mixes units into the mean).
    ``clean_maps``: map(x) when already drawn (with this ``seed``), to save drawing it again."""
    target = explained_class(model, images, seed)  # (the class clean_maps explain, under the same draw)
    if clean_maps is None:
        clean_maps = explain(model, images, target, method=method, seed=seed, **explain_options)
    clean = clean_maps.flatten(1).double()
    size = clean.norm(dim=1)
    g = torch.Generator("cpu").manual_seed(seed)
    worst = torch.zeros(len(images), dtype=torch.float64, device=clean_maps.device)
    for _ in range(samples):
        noisy = (images + (torch.rand(images.shape, generator=g) * 2 - 1).to(images) * radius).clamp(0, 1)
        moved = explain(model, noisy, target, method=method, seed=seed, **explain_options).flatten(1).double()
        worst = torch.maximum(worst, (moved - clean).norm(dim=1) / size.clamp_min(1e-12))
    return worst.masked_fill(size == 0, float("nan"))


def separation(attacked: torch.Tensor, control: torch.Tensor, metric: str) -> float:
    """AUROC of telling the attacked images' map changes from the noise control's by ``metric`` alone:
    0.5 = the metric cannot see the attack, 1 = every attacked image moved its map more than any noise
    did. Unlike the mean difference, it is in the same units for every metric, so metrics compare."""
    from sklearn.metrics import roc_auc_score

    moved = torch.cat([attacked, control]).double()
    moved = moved if metric in LOWER_IS_CLOSER else -moved  # larger = the maps further apart
    return float(roc_auc_score([1] * len(attacked) + [0] * len(control), moved.numpy()))


def _difference(control: torch.Tensor, attacked: torch.Tensor) -> str:
    """Paired mean difference attacked - control in the metric's own units, with its 95% interval."""
    d = paired_mean_difference(control, attacked)
    return f"{d.difference:+.3f} [{d.low:+.3f}, {d.high:+.3f}]" + ("" if d.significant else " (within noise)")


def _mean(v: torch.Tensor) -> dict[str, float]:
    """Mean and normal 95% interval; NaN for an empty set."""
    n = len(v)
    if n == 0:
        return {"mean": float("nan"), "low": float("nan"), "high": float("nan"), "n": 0}
    mean = v.double().mean().item()
    half = 1.959964 * v.double().std().item() / n**0.5 if n > 1 else float("inf")
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": n}


def explanation_robustness(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, eps: float = 0.025,
                           attacks: tuple[str, ...] = ("fgsm", "bim"), methods: tuple[str, ...] = MAP_METHODS,
                           q: float = 20, batch_size: int = 50, seed: int = 0, progress: bool = True,
                           sensitivity_samples: int = 0, **explain_options) -> tuple[Study, dict[str, torch.Tensor]]:
    """Clean vs adversarial maps of ``images`` for each attack (from the attack registry) and method.

    Args:
        model: classifier or IGDefense, eval mode.
        images: (N, 3, H, W) in [0, 1].
        labels: (N,) classes.
        eps: L-inf radius (the study: 0.025 on [0, 1] pixels).
        attacks: names from :func:`igdefense.attacks.attack_names` (``bim``: 10 steps of eps / 4).
        q: the top-q% pixels for IoU and top-k intersection.
        sensitivity_samples: > 0 also measures :func:`sensitivity` (radius 0.02) with that many draws.
        explain_options: passed to :func:`igdefense.explain.explain` (``num_samples``, ``layer``...).

    Returns:
        the per-image Study and the perturbed images {attack or "noise": (N, 3, H, W)} (for figures).
    """
    check_images(images)
    check_labels(labels, len(images))
    device = model_device(model)
    study = Study()
    perturbed: dict[str, list[torch.Tensor]] = {a: [] for a in (*attacks, "noise")}
    batches = -(-len(images) // batch_size)
    steps = len(attacks) + 2 + bool(sensitivity_samples)  # per method: clean, attacks, noise, sensitivity
    bar = tqdm(total=batches * len(methods) * steps, desc="explanation robustness", disable=not progress)
    for start in range(0, len(images), batch_size):
        x, y = images[start:start + batch_size].to(device), labels[start:start + batch_size].to(device)
        if isinstance(model, RandomizedDefense):
            model.reseed(seed + start)
        with torch.no_grad():
            pred = model(x).argmax(1)
        _append(study.correct, "clean", (pred == y).cpu())
        g = torch.Generator("cpu").manual_seed(seed + start)
        noise = (x + eps * (torch.randint(0, 2, x.shape, generator=g).to(x) * 2 - 1)).clamp(0, 1)
        versions = {a: run_attack(a, model, x, y, AttackSettings(eps=eps, seed=seed))[0].detach() for a in attacks}
        versions["noise"] = noise
        for name, x_p in versions.items():
            check_in_ball(name, x_p, x, eps)
            if isinstance(model, RandomizedDefense):
                model.reseed(seed + start)
            with torch.no_grad():
                pred_p = model(x_p).argmax(1)
            _append(study.correct, name, (pred_p == y).cpu())
            _append(study.flipped, name, (pred_p != pred).cpu())
            perturbed[name].append(x_p.cpu())
        for method in methods:
            clean_maps = explain(model, x, method=method, seed=seed, **explain_options)
            bar.update()
            for name, x_p in versions.items():
                maps = explain(model, x_p, method=method, seed=seed, **explain_options)
                for metric, values in compare(clean_maps, maps, q).items():
                    _append(study.metrics.setdefault(name, {}).setdefault(method, {}), metric, values)
                bar.update()
            if sensitivity_samples:
                _append(study.sensitivity, method, sensitivity(model, x, method, samples=sensitivity_samples,
                                                               seed=seed, clean_maps=clean_maps, **explain_options))
                bar.update()
    bar.close()
    return study, {k: torch.cat(v) for k, v in perturbed.items()}


def _append(store: dict[str, torch.Tensor], key: str, values: torch.Tensor) -> None:
    store[key] = torch.cat([store[key], values]) if key in store else values
