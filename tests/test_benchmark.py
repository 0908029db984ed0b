"""benchmark(): several models on the same images, one report, resumable; what `igdefense eval` runs."""

import dataclasses
import json

import pytest
import torch

from igdefense import IGDefense, RandomizedDefense, zoo
from igdefense.eval import AttackSettings, Plan, evaluate
from igdefense.eval.benchmark import benchmark

from conftest import replace_attack_runs


@pytest.fixture
def models(robust_cnn):
    return {"base": robust_cnn, "lo-ir": IGDefense(robust_cnn, zoo.rankings("smallcnn-robust"), seed=0).eval()}


def test_report_paired_and_resumed(models, test_batch, tmp_path, monkeypatch):
    x, y = test_batch
    data = [(x[:10], y[:10]), (x[10:20], y[10:20])]
    settings = AttackSettings(eps=0.01, transfer_from=("fgsm",), n_iter=5, eot_iter=2, draws=3)
    results = benchmark(models, data, Plan(["fgsm", "apgd-ce-eot", "transfer"], settings, cascade=True), out=tmp_path,
                        progress=False, meta={"model": "smallcnn-robust"})
    # the deterministic base model skips EOT and the transfer from itself; the defense gets every attack
    assert set(results["base"].correct) == {"clean", "fgsm"}
    assert set(results["lo-ir"].correct) == {"clean", "fgsm", "apgd-ce-eot", "transfer"}
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["model"] == "smallcnn-robust" and report["images_done"] == 20 and report["eps"] == 0.01
    assert [r["model"] for r in report["summary"]] == ["base", "lo-ir"]
    assert report["per_image"]["lo-ir"]["transfer"] == results["lo-ir"].correct["transfer"].int().tolist()
    # the same as evaluate() on each model alone (the defense is reseeded per batch and step)
    alone = evaluate(models["lo-ir"], data, attacks=["fgsm", "apgd-ce-eot", "transfer"], cascade=True,
                     settings=dataclasses.replace(settings, base_model=models["base"]),
                     progress=False)
    assert all(torch.equal(alone.correct[k], results["lo-ir"].correct[k]) for k in alone.correct)
    calls = []
    replace_attack_runs(monkeypatch, lambda name, run: lambda *a: calls.append(a))
    again = benchmark(models, data, Plan(["fgsm", "apgd-ce-eot", "transfer"], settings, cascade=True), out=tmp_path,
                      progress=False)
    assert not calls  # read back from the logs
    assert all(torch.equal(again["lo-ir"].correct[k], results["lo-ir"].correct[k]) for k in alone.correct)


def test_sanity_checks_land_in_the_result_and_the_eps_curve(models, test_batch, tmp_path):
    x, y = test_batch
    settings = AttackSettings(eps=8 / 255, n_iter=5, square_queries=50, eot_iter=2)
    results = benchmark({"base": models["base"]}, [(x[:10], y[:10])], Plan(["fgsm"], settings, cascade=True),
                        out=tmp_path, sanity=["base"], sanity_n=6, progress=False)
    names = [c.name for c in results["base"].sanity]
    assert names[:3] == ["gradients", "eps sweep", "more steps"]
    curve = json.loads((tmp_path / "eps_curve.json").read_text())
    assert set(curve) == {"base"} and curve["base"]["255/255"] == 0.0
    assert "Sanity checks" in (tmp_path / "report.md").read_text()


def test_sanity_checks_are_not_repeated_on_a_rerun(models, test_batch, tmp_path, monkeypatch):
    x, y = test_batch
    plan = Plan(["fgsm"], AttackSettings(eps=8 / 255, n_iter=5, square_queries=50), cascade=True)
    run = lambda **kw: benchmark({"base": models["base"]}, [(x[:10], y[:10])], plan, out=tmp_path, sanity=["base"],
                                 progress=False, **kw)
    first = run(sanity_n=6)
    calls = []
    replace_attack_runs(monkeypatch, lambda name, run: lambda *a: calls.append(a))
    again = run(sanity_n=6)
    assert not calls and [str(c) for c in again["base"].sanity] == [str(c) for c in first["base"].sanity]
    with pytest.raises(TypeError):  # (the stubbed attacks return nothing)
        run(sanity_n=5)
    assert calls  # other images: the checks run again
    saved = json.loads((tmp_path / "sanity.json").read_text())
    for crafted in [{**saved, "checks": {"base": [["gradients", "yes", ""]]}}, {**saved, "checks": {}},
                    {**saved, "checks": {"ghost": saved["checks"]["base"]}},
                    {**saved, "curves": {"base": {"1.0": 0.0}}}]:  # a file this version does not write is refused
        (tmp_path / "sanity.json").write_text(json.dumps(crafted))
        with pytest.raises(ValueError, match="not a sanity-check file"):
            run(sanity_n=6)
    (tmp_path / "sanity.json").write_text("[" * 100_000)
    with pytest.raises(ValueError, match="not a sanity-check file"):
        run(sanity_n=6)


def test_bad_arguments_say_what_is_wrong(models, test_batch, tmp_path):
    with pytest.raises(ValueError, match="not among the models"):
        benchmark(models, [test_batch], out=tmp_path, sanity=["ig"], progress=False)
    with pytest.raises(ValueError, match="models must be a non-empty dict"):
        benchmark({}, [test_batch], out=tmp_path, progress=False)
    with pytest.raises(ValueError, match=r"two model names share the log file a_b.jsonl"):
        benchmark({"a/b": models["base"], "a_b": models["base"]}, [test_batch], out=tmp_path, progress=False)
    with pytest.raises(TypeError, match=r"attacks must be a list of names, e.g. \['fgsm'\]"):
        Plan("fgsm")
    with pytest.raises(TypeError, match=r"settings must be an AttackSettings \(e.g. AttackSettings\(eps=8 / 255\)\)"):
        Plan(["fgsm"], {"eps": 8 / 255})
    with pytest.raises(TypeError, match="cascade must be True or False"):
        Plan(["fgsm"], cascade="yes")
    with pytest.raises(ValueError, match="eps must be >= 0"):
        AttackSettings(eps=-8 / 255)


def test_randomized_defense_protocol(models):
    assert isinstance(models["lo-ir"], RandomizedDefense)
    assert not isinstance(models["base"], RandomizedDefense)


def test_a_screened_model_stops_once_it_cannot_beat_the_baseline_and_goes_on_when_it_might(
        standard_cnn, robust_cnn, test_batch, tmp_path):
    # baseline: the standard model; the robust one gains many images and gets the whole cascade, the
    # standard one's copy gains none and stops after the first attack, its worst case an upper bound
    x, y = test_batch
    copy = zoo.load("smallcnn-standard")
    plan = Plan(["fgsm", "pgd"], AttackSettings(pgd_steps=3), cascade=True)
    batches = [(x[:15], y[:15]), (x[15:], y[15:])]
    results = benchmark({"standard": standard_cnn, "robust": robust_cnn, "copy": copy}, batches, plan,
                        out=tmp_path, screen=True, progress=False)
    assert results["robust"].screened is None and list(results["robust"].correct) == ["clean", "fgsm", "pgd"]
    assert results["copy"].screened == "fgsm" and list(results["copy"].correct) == ["clean", "fgsm"]
    assert results["copy"].worst_case_accuracy >= results["standard"].worst_case_accuracy
    logged = [json.loads(line) for line in (tmp_path / "copy.jsonl").read_text().splitlines()[1:]]
    assert all("pgd" not in r for r in logged) and any("fgsm" in r for r in logged)
    assert json.loads((tmp_path / "report.json").read_text())["screen"] is True
    rows = {r["model"]: r for r in json.loads((tmp_path / "report.json").read_text())["summary"]}
    assert rows["copy"]["screened after"] == "fgsm" and "screened after" not in rows["robust"]
    assert all(g.startswith("at most ") for g in rows["copy"]["gains"].values())  # upper bounds, said in the table
    table = (tmp_path / "report.md").read_text()
    assert "| screened after |" in table and "| fgsm |" in table and "copy: clean at most" in table
    full = benchmark({"standard": standard_cnn, "copy": copy}, batches, plan, out=tmp_path, progress=False)
    assert full["copy"].screened is None and "pgd" in full["copy"].correct  # its log goes on from the screen
    with pytest.raises(ValueError, match="needs a cascade"):
        benchmark({"standard": standard_cnn}, batches, Plan(["fgsm"]), out=tmp_path / "x", screen=True)
