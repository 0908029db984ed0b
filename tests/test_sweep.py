"""The settings sweep: every setting on the same images against the undefended model, base-model
attacks crafted once and shared, resumable, a table and a plot; the CLI with every kind of rankings."""

import json
from pathlib import Path

import pytest
import torch

import igdefense
from igdefense import DefenseSpec, zoo
from igdefense.cli import main
from igdefense.eval import AttackSettings, DefenseSetting, Plan, one_at_a_time, sweep
from igdefense.eval.benchmark import log_path, might_gain
from igdefense.eval.log import RECORD_META

from conftest import replace_attack_runs


def test_one_at_a_time_varies_one_thing_around_the_defaults():
    grid = one_at_a_time(("clean", "adversarial"), shares=(0.05, 0.10), sigmas=(4 / 255, 8 / 255), n_samples=(1, 8))
    default = DefenseSetting()
    assert grid[0] == DefenseSetting(share=0.05) and grid.count(default) == 1
    assert set(grid) == {default, DefenseSetting(share=0.05), DefenseSetting(sigma=8 / 255),
                         DefenseSetting(n_samples=8), DefenseSetting(rankings="adversarial")}


def test_sweep_shares_base_attacks_resumes_and_plots(robust_cnn, test_batch, tmp_path, monkeypatch):
    x, y = test_batch
    data = [(x[:15], y[:15]), (x[15:], y[15:])]
    settings = AttackSettings(eps=8 / 255, n_iter=5, draws=3, transfer_from=("fgsm",), cache=tmp_path / "cache")
    grid = [DefenseSetting(share=0.10), DefenseSetting(share=0.50, sigma=8 / 255)]
    rankings = {"clean": zoo.rankings("smallcnn-robust")}
    result = sweep(robust_cnn, rankings, data, out=tmp_path / "out", grid=grid,
                   plan=Plan(("transfer", "fgsm", "apgd-ce"), settings), screen=False, progress=False)
    rows = {r["setting"]: r for r in result.rows()}
    control = "k=10% sigma=4/255 n=1 random(0)" if result.best()["share"] == 0.10 else "k=50% sigma=8/255 n=1 random(0)"
    assert set(rows) == {"undefended", *(s.name for s in grid), control}
    for name, r in rows.items():
        assert r["n"] == 30 and r["worst_case"] <= r["clean"], name
        if name != "undefended":
            d = r["worst_case_vs_undefended"]
            assert d["low"] <= d["difference"] <= d["high"] and d["n"] == 30
    assert rows[control]["clean"] < rows["undefended"]["clean"]  # random neurons cost clean accuracy
    # the base model's examples (the transfer source, also its own fgsm): one file per batch, for every setting
    assert len(list((tmp_path / "cache").glob("fgsm-*.safetensors"))) == 2
    assert {p.name for p in (tmp_path / "out").iterdir()} >= {"sweep.json", "sweep.md", "sweep.png", "report.json"}
    assert (tmp_path / "out" / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert not [p for p in (tmp_path / "out").iterdir() if p.is_dir()]  # "4/255" in a name makes no folder
    assert "Best worst case: " in (tmp_path / "out" / "sweep.md").read_text()
    saved = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert [r["setting"] for r in saved["rows"]] == list(rows)
    calls = []
    replace_attack_runs(monkeypatch, lambda name, run: lambda *a: calls.append(a))
    again = sweep(robust_cnn, rankings, data, out=tmp_path / "out", grid=grid,
                  plan=Plan(("transfer", "fgsm", "apgd-ce"), settings), screen=False, progress=False)
    assert not calls  # every setting read back from its log
    assert all(torch.equal(again.results[n].worst_case, result.results[n].worst_case) for n in rows)
    # the cost is the first run's, from the logs, not the resumed run's nothing
    assert [r["seconds"] for r in again.rows()] == [r["seconds"] for r in rows.values()]
    assert all(r["seconds"] > 0 and r["untimed_steps"] == 0 for r in rows.values())
    # a log from a version that kept no times: its seconds are a lower bound, or unknown if it kept none
    partly, untimed = again.results[grid[0].name], again.results[grid[1].name]
    partly.untimed, untimed.untimed, untimed.seconds = 1, 4, {}
    table = {line.split(" | ")[0][2:]: line for line in again.table().splitlines()}
    assert table[grid[0].name].endswith(f"| ≥ {partly.total_seconds:.0f} |")
    assert table[grid[1].name].endswith("| not kept |")
    with pytest.raises(ValueError, match="names rankings \\['deeper'\\]"):
        sweep(robust_cnn, rankings, data, out=tmp_path / "x", grid=[DefenseSetting(rankings="deeper")])
    with pytest.raises(ValueError, match="share must be > 0"):
        DefenseSetting(share=0)


def test_might_gain_counts_images_gained_against_images_lost():
    undefended = torch.tensor([1, 1, 0, 0, 0], dtype=torch.bool)
    assert not might_gain(undefended, torch.tensor([1, 0, 1, 0, 0], dtype=torch.bool))  # one gained, one lost
    assert might_gain(undefended, torch.tensor([1, 0, 1, 1, 0], dtype=torch.bool))
    assert not might_gain(undefended, undefended)


def test_screen_stops_each_setting_after_the_attack_that_shows_it_cannot_gain(robust_cnn, test_batch, tmp_path):
    x, y = test_batch
    data = [(x[:15], y[:15]), (x[15:], y[15:])]
    # Noise of half the pixel range picks other classes' masks: it loses images under the transfer
    # attack already. Keeping every neuron, with little noise, gains some there (the transfer source,
    # FGSM on the model, is weak) and is close to the undefended model under white-box APGD-CE.
    settings = AttackSettings(eps=8 / 255, n_iter=5, draws=3, transfer_from=("fgsm",), cache=tmp_path / "cache")
    noisy, keep_all = DefenseSetting(sigma=0.5), DefenseSetting(share=1.0, sigma=1 / 255)
    half = DefenseSetting(share=0.5)
    rankings = {"clean": zoo.rankings("smallcnn-robust")}
    out = tmp_path / "out"
    result = sweep(robust_cnn, rankings, data, out=out, grid=[noisy, keep_all, half],
                   plan=Plan(("apgd-ce", "fgsm", "transfer"), settings), random_control=False, progress=False)
    base = result.results["undefended"].worst_case
    assert result.screened[noisy.name] == "transfer"  # the cascade's order: transfer first
    order = ["transfer", "apgd-ce", "fgsm"]
    for setting in (noisy, keep_all, half):  # each stopped at the first attack after which it cannot gain
        r = result.results[setting.name]
        last = result.screened.get(setting.name, "fgsm")
        assert list(r.correct) == ["clean", *order[:order.index(last) + 1]]
        gains = [might_gain(base, r.correct[a]) for a in order[:order.index(last) + 1]]  # cumulative columns
        assert gains[:-1] == [True] * (len(gains) - 1) and (gains[-1] if last == "fgsm" else not gains[-1])
    full = result.results[half.name]
    assert set(full.correct) == {"clean", "transfer", "apgd-ce", "fgsm"}
    lines = log_path(out, noisy.name).read_text().splitlines()[1:]
    steps = [set(json.loads(line)) - RECORD_META for line in lines]
    assert steps == [{"clean"}, {"clean", "transfer"}] * 2  # nothing ran after the screen
    assert len(log_path(out, half.name).read_text().splitlines()) == 1 + 2 * 4  # the full run went on from there
    rows = {r["setting"]: r for r in result.rows()}
    assert rows[noisy.name]["screened"] == "transfer" and rows[half.name]["screened"] is None
    assert result.best()["worst_case"] == max(result.results[s.name].worst_case_accuracy for s in (keep_all, half)
                                              if s.name not in result.screened)
    report = (out / "sweep.md").read_text()
    assert f"Screened ({len(result.screened)})" in report and "(screened after transfer)" in report
    assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    # when every setting is screened, the one that got furthest still gets the whole cascade
    result = sweep(robust_cnn, rankings, data, out=out, grid=[noisy, keep_all],
                   plan=Plan(("apgd-ce", "fgsm", "transfer"), settings),
                   random_control=False, progress=False)
    assert result.screened == {noisy.name: "transfer"} and result.best()["setting"] == keep_all.name
    assert set(result.results[keep_all.name].correct) == {"clean", "transfer", "apgd-ce", "fgsm"}


def test_sweep_command_with_adversarial_and_deeper_rankings(tmp_path, capsys):
    assert main(["sweep", "--model", "smallcnn-robust", "--images", "10", "--shares", "0.1", "--sigmas", "4/255",
                 "--n-samples", "1", "--attacks", "transfer,fgsm", "--adversarial-rankings", "--deep-layer",
                 "features.16", "--probe-per-class", "2", "--batch-size", "10", "--draws", "3",
                 "--out", str(tmp_path)]) == 0
    saved = json.loads((tmp_path / "sweep.json").read_text())
    names = {r["setting"] for r in saved["rows"]}
    assert {"k=10% sigma=4/255 n=1 clean", "k=10% sigma=4/255 n=1 adversarial",
            "k=10% sigma=4/255 n=1 layer features.16"} < names
    assert "PGD-10" in saved["rankings"]["adversarial"]
    assert (tmp_path / "rankings-layer-features.16.safetensors").exists()
    out = capsys.readouterr().out
    assert "| undefended |" in out
    # chosen on these 10 images (the first of each class): its gain is measured on others
    assert f"igdefense eval --setting {tmp_path / 'defense.json'} --offset 1" in out
    assert "optimistic" in (tmp_path / "sweep.md").read_text()
    # its best setting, one file: the rankings beside it, k as the share of the masked layer's neurons
    best = max((r for r in saved["rows"] if r["setting"] != "undefended" and not r["screened"]
                and not r["rankings"].startswith("random")), key=lambda r: r["worst_case"])
    setting = DefenseSpec.load(tmp_path / "defense.json")
    assert Path(setting.rankings).parent == tmp_path and setting.sigma == best["sigma"]
    assert setting.share == best["share"] and setting.k is None
    defended = igdefense.wrap(zoo.load("smallcnn-robust"), tmp_path / "defense.json", seed=0)
    k = round(best["share"] * igdefense.Rankings.load(setting.rankings).num_neurons)
    assert (defended.k, defended.sigma) == (k, setting.sigma)
