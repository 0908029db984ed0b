"""The leaderboard of randomized defenses scored as deployed, read from the committed evaluations."""

import json
import shutil
from pathlib import Path

import pytest

from igdefense.cli import main
from igdefense.eval.leaderboard import COLUMNS, leaderboard_rows
from igdefense.eval.runs import worst_over_runs_rows

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
EVALS = sorted(p.parent for p in RESULTS.glob("eval_*/report.json"))


def _cell(row: dict, column: str) -> str:
    return row[column].split()[0]


def test_a_single_runs_rows_give_its_reports_own_numbers():
    kind = {"none": "base", "random mask (ablation)": "random-mask", "IG-Defense": "lo-ir"}
    for folder in EVALS:
        report = json.loads((folder / "report.json").read_text())
        rows = {kind[r["Defense"].split(",")[0]]: r for r in leaderboard_rows([folder])}
        assert rows.keys() == report["per_image"].keys()
        for s in report["summary"]:
            row = rows[s["model"]]
            rules = {"Worst, majority": "iw_wc", "Worst, one draw": "iw_wc one-draw",
                     "Worst, every draw": "iw_wc every-draw"} if "iw_wc one-draw" in s else {"Worst, one draw": "iw_wc"}
            for column, key in rules.items():
                if row[column] != "—":  # (a report without per-image answers under that rule)
                    assert _cell(row, column) == f"{s[key]:.1f}", (folder.name, s["model"], column)
            gain = s.get("gains", {}).get("IW-WC")
            if gain and row["Worst, majority"] != "—" and "iw_wc one-draw" in s:
                assert row["Worst, majority"].split("(")[1].split()[0] == f"{float(gain.split()[0]):+.1f}"


def test_seeds_of_one_protocol_are_one_row_the_worst_over_them_as_igdefense_report_reads_the_logs():
    rows = leaderboard_rows(EVALS)
    runs = [RESULTS / "eval_smallcnn-refined-sigma8-draws", RESULTS / "eval_smallcnn-refined-sigma8-draws-seed1"]
    row = next(r for r in rows if r["Model"] == "smallcnn-refined" and "9 draws" in r["Protocol"])
    assert row["Protocol"].endswith("seeds 0, 1") and all(run.name in row["Report"] for run in runs)
    from_logs = {r["after"]: r for r in worst_over_runs_rows(runs)["rows"]}  # (the logs, not report.json)
    for rule, column in (("one-draw", "Worst, one draw"), ("majority", "Worst, majority"),
                         ("every-draw", "Worst, every draw")):
        logged = from_logs[f"lo-ir, {rule}"]
        assert row[column] == f"{logged['defended']} ({logged['difference']})", rule
    # every committed evaluation's every model is on the board
    named = {(name, f.name) for f in EVALS for name in json.loads((f / "report.json").read_text())["per_image"]}
    on_board = sum(r["Report"].count("](") for r in rows)
    assert on_board == len(named) and all(set(r) == set(COLUMNS) for r in rows)


def test_the_command_writes_the_page_and_refuses_a_crafted_report_in_one_line(tmp_path, capsys):
    assert main(["leaderboard", str(RESULTS), "-o", str(tmp_path / "lb.md")]) == 0
    page = (tmp_path / "lb.md").read_text()
    assert page.count("\n| ") == len(leaderboard_rows(EVALS)) + 1  # (the header row, then one per entry)
    assert "](../../" not in page or Path(tmp_path / page.split("](")[1].split(")")[0]).resolve().exists()
    crafted = tmp_path / "eval_x"
    shutil.copytree(RESULTS / "eval_smallcnn-robust-draws", crafted)
    report = json.loads((crafted / "report.json").read_text())
    for craft, says in [(lambda r: r["per_image"]["lo-ir"].update(rays=r["per_image"]["lo-ir"]["rays"][:7]),
                         "lo-ir rays: not 1000 whole numbers"),
                        (lambda r: r["per_image_by_rule"]["lo-ir"]["majority"]["rays"].__setitem__(3, 5),
                         "lo-ir under majority, rays: not 1000 whole numbers in [0, 1]"),
                        (lambda r: r["per_image_draws"]["lo-ir"].update(draws=0), "draws=0"),
                        (lambda r: r.pop("images"), "KeyError")]:
        crafted_report = json.loads(json.dumps(report))
        craft(crafted_report)
        (crafted / "report.json").write_text(json.dumps(crafted_report))
        assert main(["leaderboard", str(crafted)]) == 2
        err = capsys.readouterr().err
        assert "eval_x: report.json is not one igdefense eval wrote" in err and says in err, err
        assert len(err.strip().splitlines()) == 1


def _eval(folder: Path, *options: str) -> Path:
    run = ["eval", "--model", "smallcnn-robust", "--images", "20", "--batch-size", "20", "--attacks", "fgsm",
           "--draws", "3", "--out", str(folder), *options]
    assert main(run) == 0
    return folder


def test_a_row_joins_only_runs_that_differ_in_the_seed_alone(tmp_path):
    a = _eval(tmp_path / "a", "--seed", "0", "--eot-iter", "2")
    b = _eval(tmp_path / "b", "--seed", "1", "--eot-iter", "3")  # another budget: another protocol
    c = _eval(tmp_path / "c", "--seed", "1", "--eot-iter", "2")  # the seed alone differs from a's
    rows = [r for r in leaderboard_rows([a, b, c]) if r["Defense"] != "none"]
    assert sorted(r["Report"].count("](") for r in rows) == [1, 2]
    joined = next(r for r in rows if r["Report"].count("](") == 2)
    assert "[a]" in joined["Report"] and "[c]" in joined["Report"] and joined["Protocol"].endswith("seeds 0, 1")


def test_corruptions_are_not_attacks_in_the_worst_case(tmp_path):
    folder = _eval(tmp_path / "c", "--corruptions", "contrast", "--severities", "5")
    report = json.loads((folder / "report.json").read_text())
    base = report["per_image"]["base"]
    corrupted = [k for k in base if "@" in k]
    assert corrupted and any(f and not g for f, g in zip(base["fgsm"], base[corrupted[0]]))  # (so it would show)
    rows = {r["Defense"].split(",")[0]: r for r in leaderboard_rows([folder])}
    summary = {s["model"]: s for s in report["summary"]}
    assert _cell(rows["none"], "Worst, one draw") == f"{summary['base']['iw_wc']:.1f}"
    assert _cell(rows["IG-Defense"], "Worst, majority") == f"{summary['lo-ir']['iw_wc']:.1f}"
    assert "@" not in rows["IG-Defense"]["Protocol"]


def test_a_screened_defense_shows_its_worst_case_as_an_upper_bound(tmp_path):
    # the random mask loses images against the base under fgsm, so --screen stops it there
    folder = _eval(tmp_path / "s", "--attacks", "fgsm,pgd", "--cascade", "--screen", "--random-mask")
    report = json.loads((folder / "report.json").read_text())
    assert list(report["screened"]) == ["random-mask"]
    rows = {r["Defense"].split(",")[0]: r for r in leaderboard_rows([folder])}
    control = rows["random mask (ablation)"]
    assert control["Worst, majority"].startswith("≤ ") and "screened after fgsm" in control["Protocol"]
    assert not rows["IG-Defense"]["Worst, majority"].startswith("≤") and "screened" not in rows["IG-Defense"]["Protocol"]
