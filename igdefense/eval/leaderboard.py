"""A leaderboard of evaluations as deployed: one row per model, defense setting and protocol, read from
``igdefense eval`` report folders.

A randomized defense is scored three ways (its worst case with each example classified under one draw
of its noise, the majority of draws, every draw), each with its paired 95% interval against the
undefended model on the same images. Runs of one protocol that differ only in ``--seed`` are one row:
an image counts when it survives every attack of every run (the seeds are listed). AutoAttack alone,
the number a paper would report, is shown where the run measured it (AutoAttack first in a cascade,
or no cascade). A defense whose sanity checks failed is flagged ``unreliable`` with the checks; one
that ``eval --screen`` stopped attacking has its worst case marked an upper bound (``≤``).

    rows = leaderboard_rows(Path("benchmarks/results").glob("eval_*"))
    print(leaderboard_markdown(rows))
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import torch

from ..stats import paired_difference
from .plan import is_corruption
from .recorded import recorded_command
from .scoring import HEADLINE, RULES, under

BASE = "base"
COLUMNS = ("Model", "Defense", "Data", "Threat", "Protocol", "Clean", "AutoAttack alone", "Worst, one draw",
           "Worst, majority", "Worst, every draw", "Sanity checks", "Forward passes", "Machine", "Report")


@dataclass
class _Run:
    """One evaluation folder's report, as the leaderboard reads it."""

    folder: Path
    report: dict
    norm: str
    weights: str | None  # the undefended model's weights digest, from its log (logs of 0.1: none)

    def columns(self, name: str) -> dict[str, dict[str, torch.Tensor]]:
        """``{rule: {step: (N,) bool}}``, per rule the report holds per image: every rule where it
        recorded them; from the draw counts (its ``per_image``: majority) where it did not; one draw
        for a single-draw run; a deterministic model's answers under every rule."""
        r = self.report
        counts = dict(r.get("per_image_draws", {}).get(name, {}))
        draws = counts.pop("draws", 1)
        if type(draws) is not int or draws < 1:
            raise ValueError(f"draws={draws!r}")
        counts = {k: _checked(v, r["images"], draws, f"{name}'s draw counts of {k}") for k, v in counts.items()}

        def bools(table: dict, what: str) -> dict[str, torch.Tensor]:
            return {k: _checked(v, r["images"], 1, f"{what} {k}").bool() for k, v in table.items()}

        bits = bools(r["per_image"][name], name)
        if by_rule := r.get("per_image_by_rule", {}).get(name):
            return {rule: bools(by_rule[rule], f"{name} under {rule},") for rule in RULES if rule in by_rule}
        if counts:
            return {rule: {k: under(rule, v, counts[k], draws) for k, v in bits.items()} for rule in RULES[1:]}
        return {rule: bits for rule in (RULES if name == BASE else RULES[:1])}


def _checked(values, images: int, high: int, what: str) -> torch.Tensor:
    """A per-image list of whole numbers in [0, high], one per image, or a ValueError that says which."""
    t = torch.tensor(values)
    if t.shape != (images,) or t.is_floating_point() or t.is_complex() or ((t < 0) | (t > high)).any():
        raise ValueError(f"{what}: not {images} whole numbers in [0, {high}]")
    return t


@dataclass
class _Entry:
    key: tuple
    runs: list[_Run] = field(default_factory=list)


def leaderboard_rows(folders: Iterable[str | os.PathLike], link: Callable[[Path], str] | None = None) -> list[dict]:
    """One dict per row (the keys: :data:`COLUMNS`), from every ``igdefense eval`` report folder among
    ``folders`` (others are passed over). ``link``: a report folder's link target (default: its
    report.md's path)."""
    entries: dict[tuple, _Entry] = {}
    for folder in sorted(Path(f) for f in folders):
        run = _read(folder)
        if run is None:
            continue
        try:
            for name in run.report["per_image"]:
                key = _key(run, name)
                entries.setdefault(key, _Entry(key)).runs.append(run)
        except _BROKEN as err:
            raise _refused([run], err) from None
    rows = []
    for e in entries.values():
        try:
            rows.append(_row(e, link or (lambda f: (f / "report.md").as_posix())))
        except _BROKEN as err:
            raise _refused(e.runs, err) from None
    return sorted(rows, key=lambda r: (r["Data"], r["Model"], -_number(r["Worst, majority"]), r["Defense"]))


_BROKEN = (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError)  # (what a crafted report raises)


def _refused(runs: list[_Run], err: Exception) -> ValueError:
    return ValueError(f"{', '.join(str(run.folder) for run in runs)}: report.json is not one igdefense eval wrote "
                      f"({type(err).__name__}: {' '.join(str(err).split())[:200]})")


def _read(folder: Path) -> _Run | None:
    """The folder's eval report, or None when it holds none (a sweep's, a study's, none at all)."""
    try:
        report = json.loads((folder / "report.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(report, dict) or recorded_command(report) != "eval" or BASE not in report.get("per_image", {}):
        return None
    try:
        with open(folder / f"{BASE}.jsonl") as f:
            header = json.loads(f.readline())
        norm, weights = header["settings"]["norm"], header.get("identity", {}).get("model", {}).get("weights")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        norm, weights = report.get("specs", {}).get("settings", {}).get("norm", "?"), None
    return _Run(folder, report, norm, weights)


def _attacks(run: _Run, name: str) -> tuple[str, ...]:
    return tuple(a for a in run.report["per_image"][name] if a != "clean" and not is_corruption(a))


def _protocol(run: _Run, name: str) -> str:
    """What the run of ``name`` was but for its seed: its log's header (the model's or the defense's
    identity, its rankings with it, and every attack setting and budget) and the report's recorded
    specs and rankings, each less the seed."""
    def seedless(settings: dict) -> dict:
        return {k: v for k, v in settings.items() if k != "seed"}

    header = None
    for log in sorted(run.folder.glob(f"{name}.jsonl*")):  # (a torchrun's are <name>.jsonl.rank<r>)
        try:
            with open(log) as f:
                header = json.loads(f.readline())
            header = {**header, "settings": seedless(header["settings"])}
            break
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            header = None
    specs = run.report.get("specs")
    if isinstance(specs, dict) and isinstance(specs.get("settings"), dict):
        specs = {**specs, "settings": seedless(specs["settings"])}
    return json.dumps([header, specs, run.report.get("rankings")], sort_keys=True)


def _defense(run: _Run, name: str) -> str:
    if name == BASE:
        return "none"
    r = run.report
    setting = (r.get("defense") or f"k={r['k']}, sigma={255 * r['sigma']:g}/255").split(" (")[0]  # (less its origin)
    return f"{'random mask (ablation), ' if name == 'random-mask' else 'IG-Defense, '}{setting}"


def _key(run: _Run, name: str) -> tuple:
    """What a row is: the model (its name and, where logged, its weights), its defense, the data, the
    threat and the protocol, down to every setting its log and report record; not the seed."""
    r = run.report
    draws = run.report.get("per_image_draws", {}).get(name, {}).get("draws") if name != BASE else None
    return (r["model"], _defense(run, name), r["data"], run.norm, r["eps"], r["images"], _attacks(run, name),
            bool(r.get("cascade")), draws, name, run.weights, _protocol(run, name))


def _row(entry: _Entry, link: Callable[[Path], str]) -> dict:
    model, defense, data, norm, eps, images, attacks, cascade, draws, name, *_ = entry.key
    runs = entry.runs
    columns = _stacked(runs, name)
    worst = {rule: c.all(0) for rule, c in columns.items()}  # (right clean and under every attack of every run)
    base = _stacked(runs, BASE)[RULES[0]].all(0)  # (deterministic: every rule alike)
    steps = [k for k in runs[0].report["per_image"][name] if not is_corruption(k)]  # (the rows of columns)
    rule = HEADLINE if HEADLINE in columns else RULES[0]
    clean = columns[rule][steps.index("clean")]
    alone = "—"  # (AutoAttack alone, as a paper reports it: one draw)
    if "autoattack" in attacks and (not cascade or attacks[0] == "autoattack") and RULES[0] in columns:
        alone = _pct(columns[RULES[0]][steps.index("clean")] & columns[RULES[0]][steps.index("autoattack")])
    seeds = sorted({run.report.get("seed", 0) for run in runs})
    screened = sorted({str(run.report["screened"][name]) for run in runs if name in run.report.get("screened", {})})
    bound = "≤ " if screened else ""  # (eval --screen: its attacks stopped once it could not gain)
    stops = "".join(f"; screened after {attack}" for attack in screened)
    protocol = (f"{', '.join(attacks)}{'; cascade' if cascade else ''}{stops}; "
                f"{f'{draws} draws' if draws else 'one draw' if name != BASE else 'deterministic'}; "
                f"{images} images; seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}")
    row = {"Model": model, "Defense": defense, "Data": data.split(",")[0], "Threat": f"{norm} {255 * eps:g}/255",
           "Protocol": protocol, "Clean": _pct(clean), "AutoAttack alone": alone}
    for rule, column in zip(RULES, COLUMNS[7:10]):
        if rule not in worst:
            row[column] = "—"
        elif name == BASE:
            row[column] = _pct(worst[rule])
        else:
            d = paired_difference(base, worst[rule])
            row[column] = f"{bound}{_pct(worst[rule])} ({100 * d.difference:+.1f} [{100 * d.low:+.1f}, " \
                          f"{100 * d.high:+.1f}])"
    row["Sanity checks"] = _sanity(runs, name)
    row["Forward passes"] = _passes(runs, name)
    row["Machine"] = "; ".join(sorted({_machine(run.report) for run in runs}))
    row["Report"] = ", ".join(f"[{run.folder.name}]({link(run.folder)})" for run in runs)
    return row


def _stacked(runs: list[_Run], name: str) -> dict[str, torch.Tensor]:
    """``{rule: (steps, N) bool}``: per step (clean, then each attack; not the corruptions, which are
    no attack), right in every run, per rule every run scored."""
    parts = [{rule: torch.stack([v for k, v in c.items() if not is_corruption(k)])
              for rule, c in run.columns(name).items()} for run in runs]
    if len({t.shape for p in parts for t in p.values()}) > 1:
        raise ValueError("runs of one row hold different numbers of images or steps")
    return {rule: torch.stack([p[rule] for p in parts]).all(0) for rule in parts[0] if all(rule in p for p in parts)}


def _sanity(runs: list[_Run], name: str) -> str:
    if name == BASE or name == "random-mask":
        return "not run"
    lines = [line for run in runs for line in run.report.get("sanity", [])]
    if not lines:
        return "not run"
    failed = sorted({line.split("]", 1)[1].split(":", 1)[0].strip() for line in lines if line.startswith("[FAIL]")})
    return f"unreliable: {', '.join(failed)} failed" if failed else f"passed ({len(lines)} checks)"


def _passes(runs: list[_Run], name: str) -> str:
    if name == BASE:
        return "1"
    for run in runs:
        for entry in run.folder.glob(f"model_info/*/*/*_{name}.json"):
            try:
                return str(json.loads(entry.read_text())["number_forward_passes"])
            except (OSError, ValueError, KeyError):
                pass
    return "—"


def _machine(report: dict) -> str:
    m = report.get("run", {}).get("machine")
    if not isinstance(m, dict):
        return "not recorded"
    return f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores" + (f", {m['gpu']}" if m.get("gpu") else "")


def _pct(bits: torch.Tensor) -> str:
    return f"{100 * bits.float().mean().item():.1f}"


def _number(cell: str) -> float:
    try:
        return float(cell.split()[0])
    except (ValueError, IndexError):
        return float("-inf")


def leaderboard_markdown(rows: list[dict]) -> str:
    """The rows as one Markdown table (a plain table: readable without JavaScript)."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(r[c]).replace("|", "\\|") for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines) + "\n"


INTRO = """\
# Leaderboard: randomized defenses scored as deployed

Every committed `igdefense eval`, one row per model, defense setting and protocol (runs that differ
only in `--seed` are one row: an image counts when it survives every attack of every run). A randomized
defense's worst case is given under **one draw** of its noise, the **majority** of draws (Croce et al.
2022; the headline) and **every draw**, each with its paired 95% interval against the undefended
model on the same images. **AutoAttack alone** is the number a paper would report (one draw); it is
shown where the run measured it. A defense whose sanity checks failed is **unreliable**: its gain
may be gradient obfuscation, whatever its worst case says. A setting a sweep chose (its report names
the sweep) is optimistic on the images the sweep chose it on (`benchmarks/held_out.py` splits them
out). Click a column's header to sort by it.

"""


def leaderboard_page(rows: list[dict]) -> str:
    """The leaderboard page: what its columns mean, then the table."""
    return INTRO + leaderboard_markdown(rows)
