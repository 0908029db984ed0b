"""Reports: the table shows every attack of every row; the eps plot is written."""

import torch

from igdefense.eval.evaluate import EvalResult
from igdefense.eval.report import markdown_table, plot_eps_curves, summary_rows


def test_table_shows_attacks_the_base_row_lacks():
    t = lambda *v: torch.tensor(v, dtype=torch.bool)  # noqa: E731
    results = {"base": EvalResult({"clean": t(1, 1, 0, 1), "autoattack": t(1, 0, 0, 0), "rays": t(1, 0, 0, 1)}),
               "lo-ir": EvalResult({"clean": t(1, 1, 0, 1), "autoattack": t(1, 1, 0, 0), "transfer": t(1, 0, 0, 1),
                                    "rays": t(1, 1, 1, 1)})}
    table = markdown_table(summary_rows(results, "base"))
    # columns in the order the defended model was attacked (a cascade's columns are cumulative)
    assert table.splitlines()[0] == "| model | n | clean | autoattack | transfer | rays | iw_wc |"
    assert "| base | 4 | 75.00 | 25.00 |  | 50.00 | 25.00 |" in table
    assert "| lo-ir | 4 | 75.00 | 50.00 | 50.00 | 100.00 | 25.00 |" in table
    assert "IW-WC +0.00 points" in table  # base 1/4 (image 0), lo-ir 1/4 (image 0)
    assert "autoattack +25.00 points" in table and "rays +50.00 points" in table  # no cascade: shared columns
    assert "transfer" not in table.split("Paired")[1]  # the base row has no transfer column to pair with


def test_eps_plot_is_written(tmp_path):
    curves = {"base": {2 / 255: 0.6, 8 / 255: 0.3, 1.0: 0.0}, "lo-ir": {2 / 255: 0.6, 8 / 255: 0.32, 1.0: 0.0}}
    path = plot_eps_curves(curves, tmp_path / "eps.png", "APGD-CE")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_interim_table_pairs_models_on_the_images_all_have_done():
    t = lambda *v: torch.tensor(v, dtype=torch.bool)  # noqa: E731
    base = EvalResult({"clean": t(1, 1, 0, 1), "autoattack": t(1, 0, 0, 0)}, cascade=True)  # 2 batches done
    defended = EvalResult({"clean": t(1, 1), "autoattack": t(1, 1)}, cascade=True)  # 1 batch done
    n = min(len(r.correct["clean"]) for r in (base, defended))
    table = markdown_table(summary_rows({"base": base.first(n), "lo-ir": defended.first(n)}, "base"))
    assert "| base | 2 | 100.00 | 50.00 | 50.00 |" in table
    assert "IW-WC +50.00 points" in table and "1 images gained, 0 lost, n=2" in table
    assert "autoattack +50.00 points" in table  # a cascade's first column is its own: paired too
    assert base.first(n).cascade


def test_report_reads_committed_evaluations_back(tmp_path, capsys):
    # the worst case over two seeds and an unfinished cascade's upper bounds, from the committed logs,
    # reproduce the committed results made by the research scripts before these were the library's
    import json
    from pathlib import Path

    from igdefense.cli import main

    results = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
    runs = [results / "eval_smallcnn-refined-sigma8-draws", results / "eval_smallcnn-refined-sigma8-draws-seed1"]
    assert main(["report", *map(str, runs), "--json", str(tmp_path / "worst.json")]) == 0
    committed = json.loads((results / "worst_over_seeds-eval_smallcnn-refined-sigma8-draws+"
                                      "eval_smallcnn-refined-sigma8-draws-seed1.json").read_text())
    assert json.loads((tmp_path / "worst.json").read_text())["rows"] == committed["rows"]
    assert "| lo-ir, majority | 14.8 | 16.3 | +1.5 [+0.7, +2.3] | 15 | 0 |" in capsys.readouterr().out

    assert main(["report", str(results / "eval_preact-resnet18-robust")]) == 0
    out = capsys.readouterr().out
    assert "unfinished: still to run rays" in out and "39.4 (upper bound)" in out
    committed = json.loads((results / "paper_scale_resnet18.json").read_text())["settings"]
    assert committed["sigma 4/255 (the paper's)"]["lo-ir"]["defended"]["majority"]["worst_case"] == 39.4

    assert main(["report", str(runs[0]), str(runs[0])]) == 2
    assert "share a seed" in capsys.readouterr().err


def test_a_running_batch_leaves_the_summary_of_the_finished_ones_as_it_was(tmp_path):
    # a run cut on its last batch (the defended model's clean images only) is summarised on the batches
    # before it, every attack of the cascade on them, rather than every column cut back to clean
    from pathlib import Path

    from igdefense.eval.runs import summarise

    folder = Path(__file__).resolve().parents[1] / "benchmarks/results/eval_smallcnn-robust-draws"
    (tmp_path / "base.jsonl").write_text((folder / "base.jsonl").read_text())
    lines = (folder / "lo-ir.jsonl").read_text().splitlines()
    (tmp_path / "lo-ir.jsonl").write_text("\n".join(lines[:1 + 9 * 6 + 1]) + "\n")  # 9 batches, then batch 9's clean
    s = summarise(tmp_path)["models"]["lo-ir"]
    full = summarise(folder)["models"]["lo-ir"]
    assert s["images"] == 900 and s["batches"] == "9 of 10 logged" and not s["finished"]
    assert s["attacks_run"] == full["attacks_run"] == ["transfer", "adaptive", "autoattack", "apgd-ce-eot", "rays"]


def test_report_reads_a_plain_runs_columns_as_it_ran_them(tmp_path):
    # without --cascade each attack's column is its own (it was read as cumulative), the worst case all at once
    import json

    from igdefense.cli import main
    from igdefense.eval.runs import summarise

    assert main(["eval", "--model", "smallcnn-robust", "--images", "50", "--batch-size", "50", "--attacks", "bim,fgsm",
                 "--draws", "1", "--out", str(tmp_path / "ev")]) == 0
    report = json.loads((tmp_path / "ev" / "report.json").read_text())
    mine = next(s for s in report["summary"] if s["model"] == "lo-ir")
    read = summarise(tmp_path / "ev")["models"]["lo-ir"]
    rule = next(r for r in ("majority", "one-draw") if r in read)
    bits = {k: torch.tensor(v) for k, v in report["per_image"]["lo-ir"].items()}
    assert ((bits["clean"] & bits["fgsm"]) != (bits["clean"] & bits["bim"] & bits["fgsm"])).any()  # (so it shows)
    assert read[rule]["columns"]["fgsm"] == round(mine["fgsm"], 2) and read[rule]["columns"]["bim"] == round(mine["bim"], 2)
    assert read[rule]["worst_case"] == round(mine["iw_wc"], 2)


def test_the_held_out_gain_of_a_tuned_setting_reproduces_from_the_committed_logs(tmp_path):
    # the sweep chose sigma 8/255 on the first 50 images per class: the gain is split into its images
    # and the others (benchmarks/held_out.py), from the logs, as committed
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    results = root / "benchmarks" / "results"
    committed = json.loads((results / "held_out-eval_smallcnn-refined-sigma8-draws.json").read_text())
    out = subprocess.run([sys.executable, "benchmarks/held_out.py", "--sweep", str(results / "sweep_smallcnn-refined"),
                          "--eval", *(str(results / f"eval_smallcnn-refined-sigma8-draws{s}") for s in ("", "-seed1")),
                          "--json", str(tmp_path / "h.json")],
                         cwd=root, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    rerun = json.loads((tmp_path / "h.json").read_text())
    assert rerun["rows"] == committed["rows"] and committed["selected_by_the_sweep"] == 500
    held = next(r for r in committed["rows"] if r["images"].startswith("held out") and r["after"].endswith("majority"))
    assert (held["gained"], held["lost"]) == (5, 0)
