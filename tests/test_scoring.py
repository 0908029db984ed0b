"""Scoring a randomized defense over draws: a toy defense whose right draws per image are known exactly."""

import contextlib
import json
import shutil
import subprocess
import sys

import pytest
import torch
from torch import nn

from igdefense.eval import AttackSettings, EvalResult, evaluate
from igdefense.eval.report import summary_rows, write_report
from igdefense.eval.scoring import RULES, columns, under


class CyclicDefense(nn.Module):
    """A randomized defense with known rates: at its c-th forward since ``reseed``, image i is right iff
    ``(c + i) % period < rights[i]``, so any ``period`` consecutive forwards get image i right exactly
    ``rights[i]`` times. Image i is the constant image (i + 0.5) / n (an eps-0 attack leaves it so)."""

    def __init__(self, rights: torch.Tensor, labels: torch.Tensor, period: int):
        super().__init__()
        self.rights, self.labels, self.period, self._calls = rights, labels, period, 0  # (private: not a setting)
        self.scale = nn.Parameter(torch.ones(()))  # a gradient path for the attacks

    def reseed(self, seed):
        self._calls = 0

    def smooth_gradients(self, tau: float = 1.0):
        return contextlib.nullcontext()

    def forward(self, x):
        i = (x[:, 0, 0, 0] * len(self.rights)).long()
        right = (self._calls + i) % self.period < self.rights[i]
        self._calls += 1
        target = torch.where(right, self.labels[i], (self.labels[i] + 1) % 10)
        return nn.functional.one_hot(target, 10).float() * self.scale + 0 * x.flatten(1).sum(1, keepdim=True)


@pytest.fixture
def toy():
    n, draws = 20, 9
    rights = torch.arange(n) % (draws + 1)  # 0..9 right draws of 9, twice over
    labels = torch.arange(n) % 10
    x = ((torch.arange(n) + 0.5) / n).view(n, 1, 1, 1).expand(n, 3, 4, 4).contiguous()
    return CyclicDefense(rights, labels, draws).eval(), x, labels, rights, draws


def test_the_rules_give_the_known_counts(toy):
    model, x, y, rights, draws = toy
    result = evaluate(model, (x, y), attacks=["fgsm"], settings=AttackSettings(eps=0, draws=draws), progress=False)
    assert result.draws == draws
    for step in ("clean", "fgsm"):
        assert torch.equal(result.right_draws[step], rights)
    majority, every = rights > draws / 2, rights == draws
    assert torch.equal(result.correct["clean"], majority) and torch.equal(result.worst_case, majority)
    assert torch.equal(result.worst_case_under("every-draw"), every)
    first = (torch.arange(len(y)) % draws) < rights  # the clean pass is the first forward after reseed
    assert torch.equal(result.by_rule["one-draw"]["clean"], first)
    assert result.expected_worst_case.tolist() == pytest.approx((rights / draws).tolist())
    row = summary_rows({"toy": result}, "toy")[0]
    assert row["iw_wc"] == pytest.approx(100 * majority.float().mean().item())
    assert row["iw_wc every-draw"] == pytest.approx(100 * every.float().mean().item())
    assert row["iw_wc expected"] == pytest.approx(100 * (rights / draws).mean().item())


def test_a_cascade_keeps_every_rule_exact_and_resumes_from_its_counts(toy, tmp_path):
    model, x, y, rights, draws = toy
    settings = AttackSettings(eps=0, draws=draws, pgd_steps=1)
    log = tmp_path / "toy.jsonl"
    result = evaluate(model, (x, y), attacks=["fgsm", "bim"], settings=settings, cascade=True, log_path=log,
                      progress=False)
    assert torch.equal(result.correct["bim"], rights > draws / 2)  # cumulative and exact under the majority rule
    assert torch.equal(result.by_rule["every-draw"]["bim"], rights == draws)
    calls = []
    handle = model.register_forward_pre_hook(lambda m, a: calls.append(len(a[0])))
    try:
        again = evaluate(model, (x, y), attacks=["fgsm", "bim"], settings=settings, cascade=True, log_path=log,
                         progress=False)
    finally:
        handle.remove()
    assert calls == [len(x)]  # everything, counts included, read back from the log (one forward: the clean pass
    # classified again, as every resumed batch's is)
    assert all(torch.equal(again.right_draws[k], result.right_draws[k]) for k in result.right_draws)
    assert all(torch.equal(again.by_rule[r][k], result.by_rule[r][k]) for r in result.by_rule for k in result.correct)

    # the report gives every column under every rule, and the expected accuracy, from the same counts
    write_report(tmp_path / "report", {"toy": result}, "toy", {})
    md = (tmp_path / "report" / "report.md").read_text()
    table = {line.split(" | ")[0].strip("| "): line.strip("| ").split(" | ")[1:]
             for line in md.split("## Under each scoring rule")[1].strip().splitlines()[2:6]}
    one_draw = [f"{100 * result.by_rule['one-draw'][k].float().mean():.2f}" for k in ("clean", "fgsm", "bim")]
    assert table == {"one-draw": one_draw + [one_draw[-1]], "majority": ["50.00"] * 4,  # rights 5..9 of 0..9
                     "every-draw": ["10.00"] * 4, "expected": ["50.00"] * 4}  # rights 9; mean 4.5 / 9
    by_rule = json.loads((tmp_path / "report" / "report.json").read_text())["per_image_by_rule"]["toy"]
    assert by_rule["every-draw"]["bim"] == (rights == draws).int().tolist()


def test_a_deterministic_model_is_classified_once(standard_cnn, test_batch):
    calls = []
    handle = standard_cnn.register_forward_pre_hook(lambda m, a: calls.append(len(a[0])))
    try:
        result = evaluate(standard_cnn, test_batch, attacks=[], progress=False)
    finally:
        handle.remove()
    assert calls == [len(test_batch[1])] and result.draws == 1 and not result.by_rule
    assert torch.equal(result.worst_case_under("every-draw"), result.worst_case)


def test_under_names_the_rules():
    bits, counts = torch.tensor([True, False, True]), torch.tensor([5, 5, 9])
    assert under("majority", bits, counts, 9).tolist() == [True, True, True]
    assert under("every-draw", bits, counts, 9).tolist() == [False, False, True]
    with pytest.raises(ValueError, match="unknown rule"):
        under("most", bits, counts, 9)


def test_the_worst_case_over_seeds_keeps_an_image_only_when_every_run_does(tmp_path, monkeypatch):
    """benchmarks/worst_over_seeds.py on a committed run: alone, its report's worst case under each rule;
    with a second seed's run that loses two images, exactly those two fewer; runs that share a seed,
    differ in more than the seed, or come from igdefense 0.1 are refused."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    monkeypatch.syspath_prepend(str(root / "benchmarks"))
    import worst_over_seeds

    run = root / "benchmarks/results/eval_smallcnn-refined-sigma8-draws"
    rows = {r["model"]: r for r in json.loads((run / "report.json").read_text())["summary"]}
    batches, alone = worst_over_seeds.worst_over_runs([run])
    assert batches == list(range(10))
    assert 100 * alone["base"]["majority"].float().mean().item() == pytest.approx(rows["base"]["iw_wc"])
    for rule, column in [("majority", "iw_wc"), ("one-draw", "iw_wc one-draw"), ("every-draw", "iw_wc every-draw")]:
        assert 100 * alone["lo-ir"][rule].float().mean().item() == pytest.approx(rows["lo-ir"][column])

    lose = alone["lo-ir"]["one-draw"][:100].nonzero().flatten()[:2].tolist()  # two survivors of batch 0

    def second_run(name: str, seed: int, sigma_change: float = 0.0) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        for model in ("base", "lo-ir"):
            lines = (run / f"{model}.jsonl").read_text().splitlines()
            header, records = json.loads(lines[0]), [json.loads(line) for line in lines[1:]]
            header["settings"]["seed"] = seed
            if model == "lo-ir":
                header["identity"]["model"]["sigma"] += sigma_change
                for r in records:
                    if r["batch"] == 0:
                        for i in lose:  # wrong on the clean image under every draw
                            r["clean"][i], r["draws"]["clean"][i] = 0, 0
            (folder / f"{model}.jsonl").write_text("\n".join(json.dumps(x) for x in [header, *records]) + "\n")
        return folder

    _, both = worst_over_seeds.worst_over_runs([run, second_run("seed1", 1)])
    lost = torch.zeros(1000, dtype=torch.bool)
    lost[lose] = True
    assert torch.equal(both["base"]["majority"], alone["base"]["majority"])
    for rule in ("one-draw", "majority", "every-draw"):
        assert torch.equal(both["lo-ir"][rule], alone["lo-ir"][rule] & ~lost)
    assert (alone["lo-ir"]["one-draw"] & lost).sum() == 2
    with pytest.raises(worst_over_seeds.CannotCombine, match="share a seed"):
        worst_over_seeds.worst_over_runs([run, run])
    with pytest.raises(worst_over_seeds.CannotCombine, match="differ in more than the seed"):
        worst_over_seeds.worst_over_runs([run, second_run("sigma", 2, sigma_change=1 / 255)])
    with pytest.raises(worst_over_seeds.CannotCombine, match="igdefense 0.1"):
        worst_over_seeds.worst_over_runs([root / "benchmarks/results/eval_smallcnn-refined-sigma8-b1000"])


def test_a_log_copied_in_from_another_evaluation_is_refused(tmp_path, monkeypatch):
    """One run folder's logs must be one evaluation: a base log of another model, or of the same model on
    other images, beside a defended log is refused, never paired (it turned +0.1 into +15.2 points)."""
    from pathlib import Path

    results = Path(__file__).resolve().parent.parent / "benchmarks/results"
    monkeypatch.syspath_prepend(str(results.parent))
    import worst_over_seeds

    for name, base_from, why in [("other-model", "eval_smallcnn-refined-sigma8-draws", "is not built on the model"),
                                 ("other-images", "eval_smallcnn-robust-k3-draws", "batch 0 of lo-ir.jsonl holds")]:
        mixed = tmp_path / name
        mixed.mkdir()
        shutil.copy(results / "eval_smallcnn-robust-draws/lo-ir.jsonl", mixed)
        shutil.copy(results / base_from / "base.jsonl", mixed)
        with pytest.raises(worst_over_seeds.CannotCombine, match=why):
            worst_over_seeds.worst_over_runs([mixed])
    done = subprocess.run([sys.executable, "worst_over_seeds.py", str(results / "eval_smallcnn-robust-draws")],
                          cwd=results.parent, capture_output=True, text=True)
    assert (done.returncode, done.stderr) == (2, "worst_over_seeds: give two or more runs of one evaluation with "
                                                 "other --seed values\n")


def test_the_report_s_expected_row_is_cumulative_in_a_cascade_only(tmp_path):
    """The expected accuracy per column: per image the fewest right draws so far (a cascade), or of the
    clean image and that attack alone; counts chosen so that the two differ."""
    counts = {"clean": torch.tensor([3, 3, 2, 0]), "a1": torch.tensor([1, 3, 3, 0]), "a2": torch.tensor([3, 2, 0, 0])}
    bits = {k: v > 0 for k, v in counts.items()}
    tables = {}
    for cascade in (True, False):
        by_rule = {rule: columns(bits, counts, 3, ["a1", "a2"], cascade, rule) for rule in RULES}
        result = EvalResult(by_rule["majority"], cascade=cascade, draws=3, by_rule=by_rule, right_draws=counts)
        write_report(tmp_path / str(cascade), {"toy": result}, "toy", {})
        md = (tmp_path / str(cascade) / "report.md").read_text()
        tables[cascade] = next(line for line in md.splitlines() if line.startswith("| expected"))
    # cascade: clean (1, 1, 2/3, 0), then min with a1 (1/3, 1, 2/3, 0), then with a2 (1/3, 2/3, 0, 0)
    assert tables[True] == "| expected | 66.67 | 50.00 | 25.00 | 25.00 |"
    # one attack at a time: a2 with the clean image (1, 2/3, 0, 0); iw_wc over every step either way
    assert tables[False] == "| expected | 66.67 | 50.00 | 41.67 | 25.00 |"
