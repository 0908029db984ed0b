"""`igdefense eval` writes each model as a RobustBench model_info entry that RobustBench's own reader loads."""

import json

from igdefense.robustbench_compat import install_autoattack_alias
from igdefense.cli import main
from igdefense.eval.model_info import eps_string


def test_entries_load_through_robustbench_and_match_the_report(tmp_path, monkeypatch, capsys):
    install_autoattack_alias()  # (robustbench 1.1.1 imports autoattack, which PyPI has as pyautoattack)
    from robustbench.utils import get_leaderboard_latex

    out = tmp_path / "D"
    args = ["eval", "--images", "20", "--attacks", "fgsm", "--draws", "3", "--random-mask", "--out", str(out)]
    assert main(args) == 0
    report = {row["model"]: row for row in json.loads((out / "report.json").read_text())["summary"]}
    folder = out / "model_info" / "cifar10" / "Linf"
    entries = {p.stem: json.loads(p.read_text()) for p in folder.glob("*.json")}
    assert set(entries) == {"smallcnn-robust_base", "smallcnn-robust_lo-ir", "smallcnn-robust_random-mask"}
    for key, model in (("smallcnn-robust_base", "base"), ("smallcnn-robust_lo-ir", "lo-ir")):
        e = entries[key]
        assert e["clean_acc"] == f"{report[model]['clean']:.2f}" and e["external"] == f"{report[model]['iw_wc']:.2f}"
        assert e["eps"] == "8/255" and e["dataset"] == "cifar10" and e["autoattack_acc"] == ""  # AutoAttack not run
        assert e["authors"] == e["venue"] == e["reported"] == "" and e["unreliable"] == ""  # unknown: empty
    defended = entries["smallcnn-robust_lo-ir"]
    assert defended["number_forward_passes"] == 2 and "3 draws" in defended["footnote"]
    assert "majority" in defended["footnote"] and "IG-Defense" in defended["architecture"]
    assert "Test-time defense: IG-Defense" in defended["footnote"]
    control = entries["smallcnn-robust_random-mask"]["footnote"]  # the ablation is not presented as the method
    assert "Ablation control, not the method" in control and "Test-time defense" not in control
    monkeypatch.chdir(out)  # RobustBench reads ./model_info/<dataset>/<threat_model>/*.json
    latex = get_leaderboard_latex("cifar10", "Linf")
    assert latex.count("\\\\") == 3 and f"& {defended['clean_acc']} & {defended['external']} &" in latex


def test_the_radius_is_written_as_robustbench_writes_it():
    assert eps_string(8 / 255, "Linf") == "8/255" and eps_string(0.5, "L2") == "0.5" and eps_string(12.0, "L1") == "12"
