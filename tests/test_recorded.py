"""A report records the specs of its run; they read back as the run's own, and the committed reports'
recorded commands resolve to what their logs say they ran."""

import json
import shlex
from pathlib import Path

import pytest

from igdefense.cli import build_parser, main
from igdefense.cli.resolve import recorded_run
from igdefense.eval.recorded import RecordedRun
from igdefense.specs import DefenseSpec

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def test_an_eval_report_records_its_specs_and_dry_run_prints_the_same(tmp_path, capsys):
    run = ["eval", "--model", "smallcnn-robust", "--share", "0.05", "--images", "20", "--batch-size", "10",
           "--attacks", "fgsm", "--draws", "3", "--eot-iter", "2", "--eps", "4/255", "--out", str(tmp_path / "ev")]
    assert main([*run, "--dry-run"]) == 0
    printed = RecordedRun.from_json(json.loads(capsys.readouterr().out))
    assert not (tmp_path / "ev").exists()  # (a dry run runs nothing, but says what cannot run)
    assert main(["eval", "--dry-run", "--model", "nonesuch"]) == 2 and "unknown model 'nonesuch'" in capsys.readouterr().err
    assert main(["eval", "--dry-run", "--model", str(tmp_path / "m.safetensors")]) == 2
    assert "m.safetensors: no such file" in capsys.readouterr().err
    assert main(run) == 0
    recorded = RecordedRun.read(tmp_path / "ev")
    assert recorded == printed
    assert (recorded.model.name, recorded.n, recorded.batch_size) == ("smallcnn-robust", 20, 10)
    assert recorded.defense == DefenseSpec(share=0.05)
    s = recorded.settings
    assert (s.eps, s.draws, s.eot_iter, s.seed, s.precision) == (4 / 255, 3, 2, 0, "fp32")


@pytest.mark.parametrize("change, message", [
    (lambda r: r.pop("specs"), "records no specs"),
    (lambda r: r["specs"].pop("n"), "are not the"),
    (lambda r: r["specs"].update(n=-3), "n=-3 is not a whole number"),
    (lambda r: r["specs"]["settings"].update(budget=1), "unknown attack settings ['budget']"),
    (lambda r: r["specs"]["model"].update(name=7), "name=7 is not a"),
    (lambda r: r["specs"]["settings"].update(eps=8), "did you mean 8/255"),
])
def test_crafted_recorded_specs_are_refused_in_one_line(tmp_path, change, message):
    args = build_parser().parse_args(["eval", "--images", "20"])
    report = {"specs": recorded_run(args).to_json()}
    change(report)
    (tmp_path / "report.json").write_text(json.dumps(report))
    with pytest.raises(ValueError, match="^[^\n]*" + message.replace("[", r"\[").replace("]", r"\]")):
        RecordedRun.read(tmp_path)


def _header(log: Path) -> dict:
    with open(log) as f:
        return json.loads(f.readline())["settings"]


@pytest.mark.parametrize("folder", sorted(p.parent.name for p in RESULTS.glob("*/report.json")
                                          if p.parent.name.startswith(("eval_", "sweep_"))))
def test_a_committed_reports_recorded_command_resolves_to_what_its_logs_ran(folder):
    # (what benchmarks/adaptive_check.py and sweep_restarts.py rebuild a report from before reports
    # recorded their specs: its command, resolved by --dry-run)
    report = json.loads((RESULTS / folder / "report.json").read_text())
    run = recorded_run(build_parser().parse_args(shlex.split(report["run"]["command"])[1:]))
    logs = sorted((RESULTS / folder).glob("*.jsonl"))
    assert logs
    for log in logs:
        ran = _header(log)
        assert (ran["eps"], ran["norm"], ran["seed"], ran["eot_iter"]) == \
               (run.settings.eps, run.settings.norm, run.settings.seed, run.settings.eot_iter), log.name
        if ran.get("draws", 1) > 1:  # (a deterministic model's log: 1; logs from before scoring over draws: none)
            assert ran["draws"] == run.settings.draws, log.name
    assert report["images"] == run.n and report["model"] == run.model.name
    if folder.startswith("eval_"):
        assert report["sigma"] == run.defense.sigma
        defended = json.loads(open(RESULTS / folder / "lo-ir.jsonl").readline()).get("identity")
        if defended:  # (logs from before they bound an identity: none)
            assert (defended["model"]["tau"], defended["model"]["n_samples"]) == (run.defense.tau, run.defense.n_samples)
