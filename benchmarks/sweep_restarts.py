"""Does a sweep's worst-case gain survive more restarts, or was it the luck of single draws?

The sweep runs each attack once per image, and a randomized defense (IG-Defense draws noise) is
scored on each adversarial example under one noise draw. An image the defense "gains" may be one
the attacks would break with other random starts or noise draws. This reruns the sweep's whole
cascade ``--restarts`` more times with other seeds (other starts, other draws), on every image
that the undefended model or the setting still gets right in the sweep's worst case (the only
images whose comparison can change), for both models, and reports the paired worst case over the
sweep and every restart. Logs go to runs/ (resumable); the summary to benchmarks/results/.

    python benchmarks/sweep_restarts.py --sweep benchmarks/results/sweep_smallcnn-refined [--setting NAME]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import print_table, recorded_run, write_results  # noqa: E402

from igdefense.data import cache_dir  # noqa: E402
from igdefense.eval import Plan  # noqa: E402
from igdefense.eval.benchmark import benchmark, log_path  # noqa: E402
from igdefense.eval.log import RECORD_META, read_records, steps_done  # noqa: E402
from igdefense.eval.recorded import RecordedRun  # noqa: E402
from igdefense.eval.sweep import UNDEFENDED, DefenseSetting, rankings_path  # noqa: E402
from igdefense.stats import paired_row  # noqa: E402
from igdefense.rankings import Rankings  # noqa: E402


def sweep_worst_case(folder: Path, name: str) -> tuple[torch.Tensor, list[str]]:
    """Per image: right on the clean image and under every step of the sweep's log so far; the steps."""
    path = log_path(folder, name)
    last: dict[int, dict] = {}
    # read only (the sweep's logs of any version, checked line by line); a torn last line is skipped
    for record in read_records(path)[1]:
        if steps_done(record) > steps_done(last.get(record["batch"], {})):
            last[record["batch"]] = record
    steps = [k for k in last[0] if k not in RECORD_META]
    if any([k for k in r if k not in RECORD_META] != steps for r in last.values()):
        raise SystemExit(f"{name}: its batches are at different steps of the sweep; run on from a step's end")
    right = [torch.tensor([all(v) for v in zip(*(r[k] for k in steps))]) for _, r in sorted(last.items())]
    return torch.cat(right), steps


def rankings_of(run: RecordedRun, folder: Path, model, name: str) -> Rankings:
    """The rankings the sweep used under ``name``: the model's clean ones, or one the sweep saved."""
    if name == "clean":
        return run.defense.rankings_for(model, run.model.name, run.data)
    path = rankings_path(folder, name)
    if not path.exists():
        raise SystemExit(f"no {path}: the sweep saved no rankings {name!r} (random controls are not restarted)")
    return Rankings.load(path)


def best_setting(folder: Path) -> str:
    """The setting with the highest worst case in a finished sweep."""
    if not (folder / "sweep.json").exists():
        raise SystemExit(f"{folder} has no sweep.json (the sweep has not finished): name a --setting")
    rows = json.loads((folder / "sweep.json").read_text())["rows"]
    return max((r for r in rows if r["setting"] != UNDEFENDED and not r["rankings"].startswith("random")),
               key=lambda r: r["worst_case"])["setting"]


def grid_setting(entry: dict) -> DefenseSetting:
    """A grid entry of a sweep's report; older sweeps called the share of neurons "k"
    (there it was always the share: the count was never stored in a grid)."""
    entry = dict(entry)
    if "k" in entry and "share" not in entry:
        entry["share"] = entry.pop("k")
    return DefenseSetting(**entry)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sweep", type=Path, required=True, help="a sweep's folder (its report.json: options and grid)")
    p.add_argument("--setting", default=None, help="the setting's name as in sweep.md (default: the best)")
    p.add_argument("--restarts", type=int, default=3)
    a = p.parse_args()
    if a.restarts < 1:
        raise SystemExit(f"--restarts {a.restarts}: at least 1")
    meta = json.loads((a.sweep / "report.json").read_text())  # the sweep's options and grid, from its start
    grid = {s.name: s for s in (grid_setting(g) for g in meta["grid"])}
    name = a.setting or best_setting(a.sweep)
    if name not in grid:
        raise SystemExit(f"{name!r} is not in the grid of {a.sweep}: {sorted(grid)}")
    run = recorded_run(a.sweep, "sweep")  # the sweep's own specs
    torch.manual_seed(run.settings.seed)
    model = run.model.load()
    setting = grid[name]
    defense = setting.build(model, rankings_of(run, a.sweep, model, setting.rankings), run.settings.seed)
    loader, _ = run.data.loader("test", run.n, batch_size=run.batch_size)
    x, y = (torch.cat(t) for t in zip(*loader))

    (undefended, _), (defended, steps) = (sweep_worst_case(a.sweep, n) for n in (UNDEFENDED, name))
    worst = {UNDEFENDED: undefended, name: defended}
    rows_out = [summary("sweep (" + ", ".join(steps[1:]) + ")", worst, name)]
    alive = (worst[UNDEFENDED] | worst[name]).nonzero().squeeze(1)
    attacks = meta["attacks"]  # what the sweep ran (its report's own record)
    slug = re.sub(r"[^\w.=%-]+", "_", name)
    logs = Path("runs") / "sweep_restarts" / a.sweep.name / slug
    for r in range(1, a.restarts + 1):
        settings = dataclasses.replace(run.settings, seed=run.settings.seed + 1000 * r,
                                       cache=cache_dir() / "adversarial", base_model=model)
        results = benchmark({UNDEFENDED: model, name: defense}, (x[alive], y[alive]),
                            Plan(attacks, settings, cascade=True), out=logs / f"restart{r}", baseline=UNDEFENDED,
                            meta={"restart": r, "of": str(a.sweep)})
        for n in worst:
            worst[n][alive] &= results[n].worst_case
        rows_out.append({**summary(f"+ restart {r} (seed {settings.seed})", worst, name),
                         "seconds": {n: round(v.total_seconds) for n, v in results.items()}})
        # after every restart: a run stopped later still leaves the restarts it finished
        path = write_results(f"sweep_restarts-{meta['model']}-{slug}", {
            "sweep": str(a.sweep), "setting": name, "sweep_steps": steps, "images": len(y),
            "images_restarted": len(alive), "attacks": attacks, "rows": rows_out,
            "gained_images": (worst[name] & ~worst[UNDEFENDED]).nonzero().squeeze(1).tolist()})
    print_table(rows_out, ["after", "undefended", "setting", "gained", "lost", "difference", "seconds"])
    print(f"wrote {path}")


def summary(after: str, worst: dict[str, torch.Tensor], name: str) -> dict:
    return paired_row(after, "undefended", worst[UNDEFENDED], "setting", worst[name])


if __name__ == "__main__":
    main()
