"""A grid of IG-Defense settings for one model, each under the full adaptive evaluation.

    rankings = {"clean": lo_ir(model, train_loader),
                "adversarial": lo_ir(model, adversarial_probe(model, train_loader))}
    result = sweep(model, rankings, test_loader, out="sweep-out")  # one_at_a_time() around the defaults
    print(result.table())

Every setting is one model of :func:`igdefense.eval.benchmark`: the same images, a cascade with
the transfer from the undefended model first (its examples are crafted once, cached, shared by
every setting), then IG-Defense's own adaptive attack, AutoAttack, EOT and RayS on the survivors;
per-setting logs, so a rerun resumes.
The number that counts is the image-wise worst case, paired against the undefended model. After
the grid a random-ranking control runs at the k whose worst case was best: a ranking that does no
better than random neurons is not what gains anything.

Screening (on by default): the undefended model is evaluated first, then the settings go through
the cascade one attack at a time, all of them on every image, transfer (seconds) first. After each
attack, a setting that gains no more images than it loses against the undefended worst case is not
attacked further: every later attack can only lower its worst case, so it cannot beat the undefended
model on these images. Its row shows that upper bound, marked with the attack it stopped after; the
hour of white-box and black-box attacks goes to the settings that might still gain. If none might,
the one that got furthest (of those, the highest bound) still gets the whole cascade: the report then
has an exact worst case with its interval, and the random control a k.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import torch
from torch import nn

from ..atomic import atomic_write
from .._hooks import model_device
from .._identity import FIX, StateMismatch, model_digest, short_digest
from .._lock import folder_lock
from .._validation import check_number
from ..defense import DEFAULT_SHARE, SIGMA, IGDefense
from ..rankings import Rankings
from ..specs import DefenseSpec
from ..attacks import AttackSettings, run_attack
from .benchmark import benchmark, log_path, might_gain
from ..distributed import shard
from .evaluate import EvalResult, evaluate_plan
from .plan import Plan, run_order
from ..stats import paired_difference

SWEEP_ATTACKS = ("transfer", "adaptive", "autoattack", "apgd-ce-eot", "rays")
SWEEP_PLAN = Plan(SWEEP_ATTACKS, cascade=True)
UNDEFENDED = "undefended"


@dataclass(frozen=True)
class DefenseSetting:
    """One point of the grid: the ``share`` of the masked layer's neurons kept per class (a share,
    not IG-Defense's ``k``, because the grid spans layers of different widths: ``k`` = the count
    IGDefense gives it), the noise ``sigma``, ``n_samples`` noise draws, and the name of the
    rankings (a key of the rankings given to :func:`sweep`; their layer is the layer masked)."""

    share: float = DEFAULT_SHARE
    sigma: float = SIGMA
    n_samples: int = 1
    rankings: str = "clean"

    def __post_init__(self) -> None:
        check_number("share", self.share, low=0, low_open=True, high=1)
        check_number("sigma", self.sigma, low=0)
        check_number("n_samples", self.n_samples, low=1, integer=True)

    @property
    def name(self) -> str:
        return f"k={100 * self.share:g}% sigma={255 * self.sigma:g}/255 n={self.n_samples} {self.rankings}"

    def spec(self, **fields) -> DefenseSpec:
        """This point of the grid as the one defense setting every command reads (``fields``: its
        others, e.g. the rankings file)."""
        return DefenseSpec(share=self.share, sigma=self.sigma, n_samples=self.n_samples, **fields)

    def build(self, model: nn.Module, rankings: Rankings, seed: int = 0) -> IGDefense:
        return self.spec().build(model, rankings, seed=seed)


GRID = {"shares": (0.02, 0.05, DEFAULT_SHARE, 0.25, 0.50), "sigmas": (2 / 255, SIGMA, 8 / 255), "n_samples": (1, 8)}


def one_at_a_time(rankings: Sequence[str] = ("clean",), shares: Sequence[float] = GRID["shares"],
                  sigmas: Sequence[float] = GRID["sigmas"], n_samples: Sequence[int] = GRID["n_samples"]
                  ) -> list[DefenseSetting]:
    """The grid that varies one thing at a time around the paper's defaults (10% of the neurons,
    sigma 4/255, one draw, the first rankings): every share, every sigma, every n_samples, every other rankings. A full
    product (``itertools.product``) costs |ks| x |sigmas| x ... full evaluations instead of their sum."""
    default = DefenseSetting(rankings=rankings[0])
    grid = [dataclasses.replace(default, share=v) for v in shares]
    grid += [dataclasses.replace(default, sigma=s) for s in sigmas]
    grid += [dataclasses.replace(default, n_samples=n) for n in n_samples]
    grid += [dataclasses.replace(default, rankings=r) for r in rankings]
    return list(dict.fromkeys(grid))  # the default appears once


def adversarial_probe(model: nn.Module, loader: Iterable, settings: AttackSettings | None = None,
                      attack: str = "pgd") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The probe batches replaced by ``model``'s adversarial examples (PGD-10 at ``settings.eps`` by
    default), with the true labels: LO-IR on them ranks the neurons that matter under attack."""
    settings = settings or AttackSettings()
    device = model_device(model)
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        yield run_attack(attack, model, x, y, settings)[0].detach(), y


@dataclass
class SweepResult:
    """What :func:`sweep` found: each setting's evaluation, the settings, and which were screened out."""

    results: dict[str, EvalResult]  # "undefended" and one per setting, by name
    settings: dict[str, DefenseSetting]
    screened: dict[str, str] = dataclasses.field(default_factory=dict)  # name: the last attack run on it

    def rows(self) -> list[dict]:
        """Per model: clean and worst-case accuracy and their paired differences to the undefended
        model; for a screened setting (``"screened"``: the last attack run on it) the worst case is an
        upper bound. ``"seconds"``: its evaluation time, from its log (``"untimed_steps"``: how many
        steps of its log have no time, from a version that kept none; then the seconds are a lower bound)."""
        base = self.results[UNDEFENDED]
        rows = []
        for name, r in self.results.items():
            row = {"setting": name, "n": len(r.correct["clean"]), "clean": r.clean_accuracy,
                   "worst_case": r.worst_case_accuracy, "seconds": r.total_seconds, "untimed_steps": r.untimed}
            if name != UNDEFENDED:
                row["screened"] = self.screened.get(name)
                row["clean_vs_undefended"] = vars(paired_difference(base.correct["clean"], r.correct["clean"]))
                row["worst_case_vs_undefended"] = vars(paired_difference(base.worst_case, r.worst_case))
                row.update(dataclasses.asdict(self.settings[name]))
            rows.append(row)
        return rows

    def best(self) -> dict | None:
        """The fully evaluated setting with the highest worst case (None if there is none)."""
        rows = [r for r in self.rows() if r["setting"] != UNDEFENDED and not r["rankings"].startswith("random")
                and not r["screened"]]
        return max(rows, key=lambda r: r["worst_case"], default=None)

    def save_best(self, out: str | os.PathLike, rankings: dict[str, Rankings], probe_per_class: int
                  ) -> Path | None:
        """The best setting as one file, ``out``/defense.json (a :class:`~igdefense.specs.DefenseSpec`,
        its rankings stored beside it): what ``igdefense eval --setting`` and ``igdefense.wrap(model,
        file)`` read. None when no setting was fully evaluated."""
        best = self.best()
        if best is None:
            return None
        chosen, out = self.settings[best["setting"]], Path(out)
        path = rankings_path(out, chosen.rankings)
        if not path.exists():
            rankings[chosen.rankings].save(path)
        chosen.spec(rankings=str(path), probe_per_class=probe_per_class,
                    origin=f"best image-wise worst case of igdefense sweep in {out}").save(out / "defense.json")
        return out / "defense.json"

    def table(self) -> str:
        """Markdown: one row per model, differences in points with their 95% intervals."""
        def diff(d):
            return f"{100 * d['difference']:+.1f} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"

        lines = ["| setting | clean | worst case | clean vs undefended | worst case vs undefended | seconds |",
                 "|---|---|---|---|---|---|"]
        for r in self.rows():
            wc = f"{100 * r['worst_case']:.1f}"
            extra = [diff(r["clean_vs_undefended"]), diff(r["worst_case_vs_undefended"])] if "share" in r else ["", ""]
            if r.get("screened"):  # an upper bound: its interval would claim a precision the bound has not
                wc = f"≤ {wc} (screened after {r['screened']})"
                extra[1] = f"≤ {100 * r['worst_case_vs_undefended']['difference']:+.1f}"
            secs = f"{r['seconds']:.0f}"
            if r["untimed_steps"]:  # some steps from a version that kept no times
                secs = f"≥ {secs}" if r["seconds"] else "not kept"
            lines.append(f"| {r['setting']} | {100 * r['clean']:.1f} | {wc} | " + " | ".join(extra) + f" | {secs} |")
        return "\n".join(lines)


def sweep(model: nn.Module, rankings: dict[str, Rankings], data: Iterable, *, out: str | os.PathLike,
          grid: Sequence[DefenseSetting] | None = None, plan: Plan = SWEEP_PLAN,
          random_control: bool = True, screen: bool = True, seed: int = 0,
          meta: dict | None = None, progress: bool = True) -> SweepResult:
    """Evaluate the undefended ``model`` and IG-Defense at every setting of ``grid`` on ``data``.

    Args:
        model: the undefended classifier (eval mode), taking [0, 1] images.
        rankings: {name: Rankings} the settings refer to, e.g. LO-IR on clean and on adversarial
            training images, or at another layer.
        data: the same (images, labels) batches on every run (class-balanced, e.g. 500 test images).
        out: report folder; per-setting logs there make a rerun resume; ``sweep.{json,md,png}``.
        grid: the settings (default :func:`one_at_a_time` over the rankings given).
        plan: the attacks and their settings, run as a cascade (the transfer source is ``model``).
        random_control: after the grid, IG-Defense with random rankings (of the best setting's layer)
            at the best setting's k, sigma and n_samples.
        screen: after each attack of the cascade, attack further only the settings that gain more
            images than they lose against the undefended worst case so far; the others keep that
            upper bound, marked as screened (if that is all of them, the furthest gets the whole cascade).
    """
    grid = list(grid or one_at_a_time(tuple(rankings)))
    missing = sorted({s.rankings for s in grid} - set(rankings))
    if missing:
        raise ValueError(f"the grid names rankings {missing}; given: {sorted(rankings)}")
    data = [data] if isinstance(data, tuple) else list(data)  # every pass sees the same batches
    attacks = run_order(plan.attacks)  # the cascade's order (transfer first), also the screen's
    plan = plan.replace(attacks=attacks, cascade=True, settings=dataclasses.replace(plan.settings, base_model=model))
    by_name = {s.name: s for s in grid}
    models = {UNDEFENDED: model, **{n: s.build(model, rankings[s.rankings], seed) for n, s in by_name.items()}}
    meta = {**(meta or {}), "grid": [dataclasses.asdict(s) for s in grid], "screen": screen}

    def run() -> SweepResult:
        bounds: dict[str, EvalResult] = {}
        screened: dict[str, str] = {}
        if screen:
            base = benchmark({UNDEFENDED: model}, data, plan, out=out, meta=meta, progress=progress)[UNDEFENDED]
            pending = [n for n in models if n != UNDEFENDED]
            for attack in attacks[:-1]:  # (after the last one the bound is the result)
                for name in pending:  # in the logs of the full run, which goes on from there
                    bounds[name] = evaluate_plan(models[name], data, plan.for_model(models[name]), until=attack,
                                                 desc=f"{name}, screen to {attack}", log_path=log_path(out, name),
                                                 progress=progress)
                screened.update({n: attack for n in pending if not might_gain(base.worst_case, bounds[n].worst_case)})
                pending = [n for n in pending if n not in screened]
            candidates = [n for n in models if n != UNDEFENDED and not by_name[n].rankings.startswith("random")]
            if candidates and all(n in screened for n in candidates):  # one exact worst case, with its interval
                del screened[max(candidates, key=lambda n: (attacks.index(screened[n]), bounds[n].worst_case_accuracy))]
        full = benchmark({n: m for n, m in models.items() if n not in screened}, data, plan, out=out,
                         baseline=UNDEFENDED, meta=meta, progress=progress)
        return SweepResult({n: full[n] if n in full else bounds[n] for n in models}, by_name, screened)

    with folder_lock(out, "sweep"):  # one sweep writes a folder at a time
        result = run()
        best = result.best()
        if random_control and best is not None:
            control = DefenseSetting(best["share"], best["sigma"], best["n_samples"], f"random({seed})")
            rankings = {**rankings, control.rankings: rankings[best["rankings"]].randomized(seed)}
            by_name[control.name] = control
            models[control.name] = control.build(model, rankings[control.rankings], seed)
            result = run()  # the others: from their logs
        if shard()[0] == 0:  # every process has every result (gathered); one writes them
            _write(result, Path(out), meta)
        return result


def rankings_path(out: Path, name: str) -> Path:
    """Where a sweep folder keeps the rankings it computed, by their name in the sweep ("layer features.16")."""
    return out / ("rankings-" + re.sub(r"[^\w.-]+", "_", name.replace(" ", "-")) + ".safetensors")


def stored_rankings(out: Path, name: str, made_by: dict, compute: Callable[[], Rankings]) -> Rankings:
    """The rankings ``name`` of the sweep folder ``out``: computed once (by one process under torchrun)
    and stored, bound to ``made_by`` (the model's weights, the probe, eps...); a folder's rankings made
    by anything else are refused, not reused."""
    path, digest = rankings_path(out, name), short_digest({**made_by, "name": name})
    if shard()[0] == 0 and not path.exists():
        computed = compute()
        computed.made_by = digest
        computed.save(path)
    if shard()[1] > 1:
        torch.distributed.barrier()
    loaded = Rankings.load(path)
    if loaded.made_by != digest:
        raise StateMismatch(f"{path} holds rankings {name!r} of another sweep (another model, probe or eps); {FIX}")
    return loaded


def sweep_rankings(model: nn.Module, clean: Rankings, train, out: Path, *, probe_per_class: int,
                   settings: AttackSettings, adversarial: bool = False, deep_layer: str | None = None
                   ) -> dict[str, Rankings]:
    """The rankings a sweep compares, by name: ``"clean"`` (given), and as asked LO-IR on the model's
    PGD-10 examples of the first ``probe_per_class`` training images per class of ``train``
    (``"adversarial"``) and LO-IR at the module ``deep_layer`` (``"layer NAME"``), each computed once
    per sweep folder ``out`` and bound to what made it (:func:`stored_rankings`)."""
    from ..data import balanced_loader
    from ..rankings.lo_ir import lo_ir

    made_by = {"model": model_digest(model), "probe": train.identity(), "probe_per_class": probe_per_class,
               "eps": settings.eps}
    probe = f"{train.description}, first {probe_per_class} per class"
    rankings = {"clean": clean}

    def loader():
        return balanced_loader(train, batch_size=200, per_class=probe_per_class)

    if adversarial:
        rankings["adversarial"] = stored_rankings(out, "adversarial", made_by, lambda: lo_ir(
            model, adversarial_probe(model, loader(), settings), class_names=clean.class_names,
            probe=f"PGD-10 (eps {settings.eps:.4g}) examples of {probe}"))
    if deep_layer:
        rankings[f"layer {deep_layer}"] = stored_rankings(out, f"layer {deep_layer}", made_by, lambda: lo_ir(
            model, loader(), layer=deep_layer, class_names=clean.class_names, probe=probe))
    return rankings


def _write(result: SweepResult, out: Path, meta: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "sweep.json", json.dumps({**meta, "rows": result.rows()}, indent=1) + "\n")
    base = 100 * result.results[UNDEFENDED].worst_case_accuracy
    lines = ["# IG-Defense settings under the image-wise worst case", "", result.table(), "",
             "Seconds: the setting's evaluation time, summed over every run that wrote its log (a resumed sweep "
             "counts each part once); '≥' where some of its steps, 'not kept' where all, are from a version that "
             "kept no times.", ""]
    best = result.best()
    if best is not None:
        d = best["worst_case_vs_undefended"]
        verdict = "beyond noise" if d["low"] > 0 else "within noise"
        lines.append(f"Best worst case: {best['setting']}, {100 * best['worst_case']:.1f}% vs {base:.1f}% undefended "
                     f"({100 * d['difference']:+.1f} points, 95% CI [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]: "
                     f"{verdict}). It is the best of these settings on these images, so its gain here is "
                     "optimistic: evaluate it on other images (`igdefense eval --setting defense.json --offset N`, "
                     "N past this sweep's images of each class) for the number to quote.")
    if result.screened:
        lines.append(f"\nScreened ({len(result.screened)}): under the attacks up to the one named in their row, "
                     "these settings gain no more images than they lose against the undefended worst case "
                     f"({base:.1f}%), and every further attack can only lower a worst case, so none of them can "
                     "beat the undefended model on these images; the later attacks were not run on them. Their "
                     "worst case is shown as that upper bound.")
    atomic_write(out / "sweep.md", "\n".join(lines) + "\n")
    try:
        plot_sweep(result, out / "sweep.png")
    except ImportError:
        print("matplotlib is missing (pip install 'igdefense[plot]'): sweep.json and sweep.md written, no plot")


def plot_sweep(result: SweepResult, path: str | os.PathLike, zoom: float = 6.0) -> Path:
    """Clean vs worst-case accuracy, one point per setting with its paired 95% intervals (as error
    bars around the point), screened settings as open triangles at their upper bound, the
    undefended model as a star; left every setting, right those within ``zoom`` points of the
    undefended model, where settings usually crowd. Points are numbered; the key is below."""
    from matplotlib.figure import Figure  # (no pyplot: a notebook's backend stays as it is)

    fig = Figure(figsize=(13, 5.5))
    axes = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.3]})
    base = result.results[UNDEFENDED]
    bx, by = 100 * base.clean_accuracy, 100 * base.worst_case_accuracy
    rows = [r for r in result.rows() if r["setting"] != UNDEFENDED]
    points: dict[tuple[float, float], list[str]] = {}  # settings on the same point share one label
    key = []
    for ax in axes:
        seen: set[str] = set()
        for r in rows:
            x, y = 100 * r["clean"], 100 * r["worst_case"]
            cx, cy = r["clean_vs_undefended"], r["worst_case_vs_undefended"]
            # the intervals are of the differences to the undefended model, drawn around this point
            xerr = [[100 * (cx["difference"] - cx["low"])], [100 * (cx["high"] - cx["difference"])]]
            yerr = [[100 * (cy["difference"] - cy["low"])], [100 * (cy["high"] - cy["difference"])]]
            random = r["rankings"].startswith("random")
            kind = "random-ranking control" if random else "IG-Defense setting"
            if r["screened"]:  # an upper bound: the point marks its top, no interval
                kind += ", screened (upper bound)"
                yerr = None
            ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt=("v" if r["screened"] else "s" if random else "o"),
                        color="0.5" if random else "C0", mfc="none" if r["screened"] else None,
                        ms=6, capsize=2, lw=0.8, label=None if kind in seen else kind)
            seen.add(kind)
            if ax is axes[0]:
                key.append(f"{len(key) + 1}: {r['setting']}")
                points.setdefault((x, y), []).append(str(len(key)))
        ax.plot([bx], [by], "*", color="C3", ms=14, label=f"undefended ({bx:.1f}, {by:.1f})")
        ax.axhline(by, color="C3", lw=0.6, ls="--")
        ax.set_xlabel("clean accuracy (%)")
        ax.set_ylabel("image-wise worst-case accuracy (%)")
    for i, ((x, y), numbers) in enumerate(points.items()):  # staggered: close points' labels do not collide
        for ax in axes:
            ax.annotate(",".join(numbers), (x, y), fontsize=7, xytext=(4, 3 + 8 * (i % 3)), textcoords="offset points")
    axes[1].set_xlim(bx - zoom, bx + zoom)
    axes[1].set_ylim(by - zoom, by + zoom)
    n = len(base.correct["clean"])
    axes[0].set_title(f"every setting, {n} images; error bars: paired 95% intervals vs undefended", fontsize=9)
    axes[1].set_title(f"within {zoom:g} points of the undefended model", fontsize=9)
    axes[0].legend(fontsize=8, loc="best")
    fig.text(0.01, 0.01, "   ".join(key), fontsize=7, wrap=True, va="bottom")
    fig.tight_layout(rect=(0, 0.02 * (1 + len(key) // 4), 1, 1))
    fig.savefig(path, dpi=150)
    return Path(path)
