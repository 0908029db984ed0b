"""evaluate(): real attacks from pyautoattack, per-image results, resumable logs."""

import json
import re

import pytest
import torch

from igdefense.eval import AttackSettings, EvalResult, evaluate
from igdefense.eval.log import RECORD_META
from igdefense.eval.scoring import under

from conftest import replace_attack_runs


def test_apgd_breaks_a_standard_model(standard_cnn, test_batch):
    result = evaluate(standard_cnn, test_batch, attacks=["apgd-ce"], settings=AttackSettings(n_iter=25),
                      progress=False)
    assert result.clean_accuracy >= 0.7
    assert result.robust_accuracy["apgd-ce"] <= 0.05  # a normally trained model has no robustness
    assert torch.equal(result.worst_case, result.correct["clean"] & result.correct["apgd-ce"])


def test_worst_case_is_per_image_not_the_weakest_column():
    # Attack a breaks image 0, attack b image 1: each column says 2/3, the image-wise worst case 1/3.
    result = EvalResult({"clean": torch.tensor([True, True, True]), "a": torch.tensor([False, True, True]),
                         "b": torch.tensor([True, False, True])})
    assert result.robust_accuracy == {"a": pytest.approx(2 / 3), "b": pytest.approx(2 / 3)}
    assert result.worst_case.tolist() == [False, False, True]
    assert result.worst_case_accuracy == pytest.approx(1 / 3)
    # An image wrong when clean does not count, whatever the attacks' columns say.
    assert not EvalResult({"clean": torch.tensor([False]), "a": torch.tensor([True])}).worst_case.any()


def forward_sizes(model, run, rechecks: list | None = None):
    """What ``run()`` returns, and the batch sizes of ``model``'s forward calls while it ran, but those of
    the clean pass a resumed batch is classified again with (``rechecks`` gets their sizes)."""
    import importlib

    evaluation = importlib.import_module("igdefense.eval.evaluate")  # (the package exports a function of the name)
    calls, rechecking, recheck = [], [], evaluation._recheck_clean

    def counted(*args, **kwargs):
        rechecking.append(True)
        try:
            return recheck(*args, **kwargs)
        finally:
            rechecking.pop()
    handle = model.register_forward_pre_hook(
        lambda m, a: (rechecks if rechecks is not None else []).append(len(a[0])) if rechecking
        else calls.append(len(a[0])))
    evaluation._recheck_clean = counted
    try:
        return run(), calls
    finally:
        handle.remove()
        evaluation._recheck_clean = recheck


def test_resume_from_log(resnet18, foolbox_images, tmp_path):
    x, y = foolbox_images
    batches = [(x[i:i + 5], y[i:i + 5]) for i in range(0, 20, 5)]
    log = tmp_path / "run.jsonl"
    full = evaluate(resnet18, batches, attacks=[], log_path=log, progress=False)
    lines = log.read_text().splitlines()
    assert len(lines) == 5  # header + one line per batch
    # Simulate a run killed while writing batch 3: a torn last line.
    log.write_text("\n".join(lines[:3]) + "\n" + lines[3][:10])
    rechecks = []
    resumed, calls = forward_sizes(resnet18, lambda: evaluate(resnet18, batches, attacks=[], log_path=log,
                                                              progress=False), rechecks)
    assert calls == [5, 5]  # only batches 3 and 4 were recomputed
    assert rechecks == [5, 5]  # batches 1 and 2, read from the log: their clean pass classified again
    assert torch.equal(resumed.correct["clean"], full.correct["clean"])
    assert len(log.read_text().splitlines()) == 5


def test_log_with_other_settings_is_refused(resnet18, foolbox_images, tmp_path):
    log = tmp_path / "run.jsonl"
    evaluate(resnet18, foolbox_images, attacks=[], settings=AttackSettings(seed=1), log_path=log, progress=False)
    with pytest.raises(ValueError, match=r"another run: settings\.seed \(1 there, 0 here\)"):
        evaluate(resnet18, foolbox_images, attacks=[], log_path=log, progress=False)


def test_unknown_attack(resnet18, foolbox_images):
    with pytest.raises(ValueError, match="choose from"):
        evaluate(resnet18, foolbox_images, attacks=["pgd-weak"], progress=False)


def test_cascade_gives_the_same_worst_case_for_less_work(robust_cnn, test_batch):
    x, y = test_batch[0][::3], test_batch[1][::3]
    attacks, settings = ["apgd-ce", "apgd-dlr"], AttackSettings(n_iter=25)
    full = evaluate(robust_cnn, (x, y), attacks=attacks, settings=settings, progress=False)
    attacked = []
    handle = robust_cnn.register_forward_pre_hook(lambda m, a: attacked.append(len(a[0])))
    try:
        cascade = evaluate(robust_cnn, (x, y), attacks=attacks, settings=settings, progress=False, cascade=True)
    finally:
        handle.remove()
    assert torch.equal(cascade.worst_case, full.worst_case)
    assert torch.equal(cascade.correct["apgd-ce"], full.correct["apgd-ce"])  # the first attack is its own
    assert torch.equal(cascade.correct["apgd-dlr"], cascade.worst_case)  # the last is cumulative
    survivors = int(cascade.correct["apgd-ce"].sum())
    assert 0 < survivors < len(y) and max(attacked[-5:]) <= survivors  # apgd-dlr saw only the survivors


def test_a_cascade_runs_the_transfer_first_and_white_box_attacks_on_its_survivors(standard_cnn, robust_cnn,
                                                                                  test_batch):
    from igdefense import IGDefense, zoo

    defended = IGDefense(robust_cnn, zoo.rankings("smallcnn-robust"), seed=0).eval()
    x, y = test_batch
    settings = AttackSettings(eps=8 / 255, n_iter=10, draws=3, base_model=standard_cnn, transfer_from=("apgd-ce",))
    attacked = []
    handle = defended.register_forward_pre_hook(lambda m, a: attacked.append(len(a[0])))
    try:
        cascade = evaluate(defended, (x, y), attacks=["apgd-ce", "transfer"], settings=settings, cascade=True,
                           progress=False)
    finally:
        handle.remove()
    assert list(cascade.correct) == ["clean", "transfer", "apgd-ce"]  # the run's order: cumulative columns
    rules = cascade.by_rule
    survivors = int((rules["one-draw"]["transfer"] | rules["majority"]["transfer"]).sum())  # by either rule
    assert 0 < survivors < int(cascade.correct["clean"].sum())
    # after clean and the transfer's example, each classified under every draw, APGD-CE saw only the survivors
    assert max(attacked[2 * settings.draws:]) <= survivors
    full = evaluate(defended, (x, y), attacks=["apgd-ce", "transfer"], settings=settings, progress=False)
    assert torch.equal(cascade.correct["transfer"], full.correct["transfer"])  # same noise per attack
    assert torch.equal(cascade.worst_case, full.worst_case)


QUICK = AttackSettings(n_iter=10, draws=3)  # resume and until do not depend on the attacks' budgets


@pytest.fixture
def defended_batches(robust_cnn, test_batch):
    """IG-Defense (seeded) on the robust SmallCNN, and two batches of 6 test images."""
    from igdefense import IGDefense, zoo

    x, y = test_batch
    return IGDefense(robust_cnn, zoo.rankings("smallcnn-robust"), seed=0).eval(), [(x[:6], y[:6]), (x[6:12], y[6:12])]


def test_resume_mid_batch_matches_an_uninterrupted_run(defended_batches, tmp_path):
    defended, batches = defended_batches
    attacks = ["apgd-ce", "apgd-dlr"]
    log = tmp_path / "run.jsonl"
    full = evaluate(defended, batches, attacks=attacks, settings=QUICK, log_path=log, progress=False, cascade=True)
    lines = log.read_text().splitlines()
    assert len(lines) == 1 + 2 * 3  # header, then clean and each attack of each batch
    log.write_text("\n".join(lines[:-1]) + "\n")  # stopped during batch 2's apgd-dlr
    resumed, calls = forward_sizes(defended, lambda: evaluate(defended, batches, attacks=attacks, settings=QUICK,
                                                              log_path=log, progress=False, cascade=True))
    survivors = int(full.correct["apgd-ce"][6:].sum())
    assert calls and max(calls) <= survivors  # only batch 2's apgd-dlr (on apgd-ce's survivors) ran again
    for k in ["clean", *attacks]:  # the defense's noise is seeded per batch and step: same results
        assert torch.equal(resumed.correct[k], full.correct[k]), k
    # every step has a time; what was read back keeps the first run's, and the totals are the log's sums
    records = [json.loads(line) for line in log.read_text().splitlines()[1:]]
    assert records[:-1] == [json.loads(line) for line in lines[1:-1]]
    assert all(set(r["seconds"]) == set(r) - RECORD_META for r in records) and resumed.untimed == 0
    last = {r["batch"]: r["seconds"] for r in records}  # a batch's last record holds all its steps' times
    assert resumed.seconds == pytest.approx({k: sum(t[k] for t in last.values()) for k in ["clean", *attacks]})


def test_a_log_without_times_resumes_and_counts_its_steps_as_untimed(standard_cnn, test_batch, tmp_path):
    x, y = test_batch
    batches = [(x[:6], y[:6]), (x[6:12], y[6:12])]
    log = tmp_path / "run.jsonl"
    full = evaluate(standard_cnn, batches, attacks=["fgsm"], log_path=log, progress=False)
    header, *records = [json.loads(line) for line in log.read_text().splitlines()]
    for r in records:  # as an earlier version wrote it (no times, no chain)
        r.pop("prev")
        assert set(r.pop("seconds")) == set(r) - RECORD_META
    log.write_text("".join(json.dumps(r) + "\n" for r in [header, *records]))
    again, calls = forward_sizes(standard_cnn, lambda: evaluate(standard_cnn, batches, attacks=["fgsm"], log_path=log,
                                                                progress=False))
    assert not calls and torch.equal(again.worst_case, full.worst_case)
    assert again.untimed == 2 * 2 and again.seconds == {"clean": 0.0, "fgsm": 0.0}


@pytest.mark.parametrize("seconds", ["NaN", "Infinity", "-1"])
def test_a_log_whose_seconds_are_not_a_time_is_refused_with_its_line(standard_cnn, test_batch, tmp_path, seconds):
    x, y = test_batch
    log = tmp_path / "run.jsonl"
    evaluate(standard_cnn, (x[:6], y[:6]), attacks=["fgsm"], log_path=log, progress=False)
    text = log.read_text()
    log.write_text(re.sub(r'"fgsm": [0-9.]+}', '"fgsm": ' + seconds + '}', text, count=1))
    assert log.read_text() != text
    with pytest.raises(ValueError, match=r"run.jsonl:3: its seconds are not finite numbers of seconds"):
        evaluate(standard_cnn, (x[:6], y[:6]), attacks=["fgsm"], log_path=log, progress=False)


def test_until_stops_the_cascade_and_a_later_call_goes_on_from_its_log(defended_batches, tmp_path):
    defended, batches = defended_batches
    attacks = ["apgd-ce", "apgd-dlr"]
    log = tmp_path / "run.jsonl"
    first = evaluate(defended, batches, attacks=attacks, settings=QUICK, log_path=log, progress=False, cascade=True,
                     until="apgd-ce")
    assert set(first.correct) == {"clean", "apgd-ce"} and len(log.read_text().splitlines()) == 1 + 2 * 2
    rest, calls = forward_sizes(defended, lambda: evaluate(defended, batches, attacks=attacks, settings=QUICK,
                                                           log_path=log, progress=False, cascade=True))
    assert calls and max(calls) <= int(first.correct["apgd-ce"].sum())  # apgd-dlr on the survivors only
    whole = evaluate(defended, batches, attacks=attacks, settings=QUICK, log_path=tmp_path / "whole.jsonl",
                     progress=False, cascade=True)
    for k in ["clean", *attacks]:
        assert torch.equal(rest.correct[k], whole.correct[k]), k
    with pytest.raises(ValueError, match="needs cascade=True"):
        evaluate(defended, batches, attacks=attacks, until="apgd-ce")


def test_keep_adversarial_returns_the_examples_that_fooled_the_model(robust_cnn, test_batch, tmp_path):
    x, y = test_batch
    result = evaluate(robust_cnn, [(x[:15], y[:15]), (x[15:], y[15:])], attacks=["fgsm"],
                      settings=AttackSettings(eps=8 / 255), keep_adversarial=True, progress=False)
    adv = result.adversarial["fgsm"]
    assert adv.shape == x.shape and (adv - x).abs().max() <= 8 / 255 + 1e-6
    with torch.no_grad():
        assert torch.equal(robust_cnn(adv).argmax(1) == y, result.correct["fgsm"])  # fooled exactly where counted
    assert torch.equal(adv[~result.correct["clean"]], x[~result.correct["clean"]])  # wrong already: left clean
    log = tmp_path / "log.jsonl"
    evaluate(robust_cnn, (x, y), attacks=["fgsm"], log_path=log, progress=False)
    with pytest.raises(ValueError, match="keep_adversarial needs every attack run in this call"):
        evaluate(robust_cnn, (x, y), attacks=["fgsm"], log_path=log, keep_adversarial=True, progress=False)


def test_attack_budgets_are_part_of_a_log_s_settings(standard_cnn, test_batch, tmp_path):
    log = tmp_path / "log.jsonl"
    evaluate(standard_cnn, test_batch, attacks=["bim"], settings=AttackSettings(pgd_steps=2), log_path=log,
             progress=False)
    with pytest.raises(ValueError, match=r"another run: settings\.budgets\.pgd_steps \(2 there, 3 here\)"):
        evaluate(standard_cnn, test_batch, attacks=["bim"], settings=AttackSettings(pgd_steps=3), log_path=log,
                 progress=False)


def record_calls(monkeypatch, names, what) -> list:
    """Each call of the attacks ``names``, as (name, what(model, x)), appended to the list returned."""
    calls = []
    replace_attack_runs(monkeypatch, lambda n, run: run if n not in names else
                        lambda m, x, y, s: calls.append((n, what(m, x))) or run(m, x, y, s))
    return calls


def finish_then_add(model, batches, attack: str, added: str, settings, log, calls: list):
    """A cascade of ``attack`` run to the end, then ``attack`` + ``added`` from the same log: both
    results, ``calls`` holding the second run's only."""
    first = evaluate(model, batches, attacks=[attack], settings=settings, cascade=True, log_path=log, progress=False)
    calls.clear()
    return first, evaluate(model, batches, attacks=[attack, added], settings=settings, cascade=True, log_path=log,
                           progress=False)


def test_an_attack_added_to_a_finished_evaluation_runs_alone_on_what_stands(robust_cnn, test_batch, tmp_path,
                                                                            monkeypatch):
    calls = record_calls(monkeypatch, ("fgsm", "bim"), lambda model, x: len(x))
    settings = AttackSettings(pgd_steps=2)
    x, y = test_batch
    batches = [(x[:15], y[:15]), (x[15:], y[15:])]
    log = tmp_path / "run.jsonl"
    first, added = finish_then_add(robust_cnn, batches, "fgsm", "bim", settings, log, calls)
    assert {n for n, _ in calls} == {"bim"}  # fgsm is not run again
    assert sum(size for _, size in calls) == int(first.correct["fgsm"].sum())  # bim saw fgsm's survivors only
    fresh = evaluate(robust_cnn, batches, attacks=["fgsm", "bim"], settings=settings, cascade=True, progress=False)
    assert all(torch.equal(added.correct[k], fresh.correct[k]) for k in fresh.correct)
    assert json.loads(log.read_text().splitlines()[0])["settings"]["order"] == ["fgsm", "bim"]  # the log says so
    calls.clear()
    evaluate(robust_cnn, batches, attacks=["fgsm", "bim"], settings=settings, cascade=True, log_path=log,
             progress=False)
    assert calls == []  # resumed: everything from the log
    with pytest.raises(ValueError, match=r"with \['bim'\] in its attack order, which the attacks given no longer name"):
        evaluate(robust_cnn, batches, attacks=["fgsm"], settings=settings, cascade=True, log_path=log, progress=False)


def test_transfer_added_to_a_randomized_defense_s_finished_log_runs_alone_on_its_survivors(defended_batches,
                                                                                            robust_cnn, tmp_path,
                                                                                            monkeypatch):
    """A log without transfer takes it added later (the base model and what it crafts are new, not
    another run's): only transfer runs (crafting on the base model, as it always does, on the whole
    batch), its column is cumulative over the logged draws' survivors; a log whose transfer used
    another base model is refused."""
    from igdefense import zoo

    defended, batches = defended_batches
    calls = record_calls(monkeypatch, ("fgsm", "transfer"), lambda model, x: (model is defended, len(x)))
    settings = AttackSettings(draws=3, base_model=robust_cnn, transfer_from=("fgsm",))
    log = tmp_path / "run.jsonl"
    first, added = finish_then_add(defended, batches, "fgsm", "transfer", settings, log, calls)
    # per batch of 6: transfer, and the fgsm it crafts on the base model; fgsm is not run on the defense again
    assert calls == [("transfer", (True, 6)), ("fgsm", (False, 6))] * len(batches)
    for rule in ("one-draw", "majority", "every-draw"):
        assert torch.equal(added.by_rule[rule]["fgsm"], first.by_rule[rule]["fgsm"])
    for rule in ("majority", "every-draw"):  # cumulative: fgsm's survivors that transfer's examples leave right
        assert torch.equal(added.by_rule[rule]["transfer"], first.by_rule[rule]["fgsm"]
                           & under(rule, added.by_rule["one-draw"]["transfer"], added.right_draws["transfer"], 3))
    header = json.loads(log.read_text().splitlines()[0])
    assert header["settings"]["order"] == ["fgsm", "transfer"] and "transfer_base" in header["identity"]
    other = AttackSettings(draws=3, base_model=zoo.load("smallcnn-standard"), transfer_from=("fgsm",))
    with pytest.raises(ValueError, match="another run: identity.transfer_base"):
        evaluate(defended, batches, attacks=["fgsm", "transfer"], settings=other, cascade=True, log_path=log,
                 progress=False)


def test_a_log_whose_adaptive_attack_has_no_recorded_base_is_refused_saying_why(defended_batches, robust_cnn,
                                                                                 tmp_path):
    defended, batches = defended_batches
    settings = AttackSettings(draws=3, base_model=robust_cnn, adaptive_steps=2, adaptive_targets=1, n_iter=2)
    log = tmp_path / "run.jsonl"
    evaluate(defended, batches[:1], attacks=["adaptive"], settings=settings, log_path=log, progress=False)
    header, *records = log.read_text().splitlines()
    old = json.loads(header)
    assert "transfer_base" in old["identity"]  # the adaptive attack starts from the base model's example
    del old["identity"]["transfer_base"]  # as igdefense wrote it before the base was recorded for it
    log.write_text("\n".join([json.dumps(old), *records]) + "\n")
    with pytest.raises(ValueError, match="ran the adaptive attack before igdefense recorded the base model"):
        evaluate(defended, batches[:1], attacks=["adaptive"], settings=settings, log_path=log, progress=False)


def test_a_log_binds_to_the_version_of_each_attack_it_ran(robust_cnn, test_batch, tmp_path):
    # APGD-T changed (version 2: every image of a randomized defense); a log of its first version is
    # another run's, while a log that never ran it resumes and takes it on as an added attack
    x, y = test_batch[0][:10], test_batch[1][:10]
    settings = AttackSettings(n_iter=2)
    log = tmp_path / "run.jsonl"
    evaluate(robust_cnn, (x, y), attacks=["fgsm"], settings=settings, cascade=True, log_path=log, progress=False)
    assert "attack_versions" not in json.loads(log.read_text().splitlines()[0])["identity"]  # (as every older log)
    evaluate(robust_cnn, (x, y), attacks=["fgsm", "apgd-t"], settings=settings, cascade=True, log_path=log,
             progress=False)
    other = tmp_path / "other.jsonl"
    evaluate(robust_cnn, (x, y), attacks=["apgd-t"], settings=settings, log_path=other, progress=False)
    lines = other.read_text().splitlines()
    header = json.loads(lines[0])
    assert header["identity"]["attack_versions"] == {"apgd-t": 2}
    del header["identity"]["attack_versions"]  # (as its first version's log)
    other.write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n")
    with pytest.raises(ValueError, match="attack_versions"):
        evaluate(robust_cnn, (x, y), attacks=["apgd-t"], settings=settings, log_path=other, progress=False)


def test_survivors_re_attacked_in_batches_keep_each_finished_batch_and_give_the_same_worst_case(
        robust_cnn, test_batch, tmp_path):
    # (benchmarks/adaptive_check.py --batch-size: a re-attack longer than a session, kept in pieces)
    from igdefense.eval.survivors import attack_survivors

    x, y = test_batch
    settings = AttackSettings(pgd_steps=10)  # (BIM: no random start, so the batches cannot change its examples)
    done = evaluate(robust_cnn, (x, y), ["fgsm"], settings=settings, progress=False)
    whole, _ = attack_survivors(robust_cnn, done, [(x, y)], ["bim"], settings, log_path=tmp_path / "a.jsonl",
                                progress=False)
    pieces, _ = attack_survivors(robust_cnn, done, [(x, y)], ["bim"], settings, log_path=tmp_path / "b.jsonl",
                                 batch_size=4, progress=False)
    assert torch.equal(whole, pieces) and (done.worst_case & ~whole).any()  # (the re-attack broke some)
    logged = {json.loads(line)["batch"] for line in (tmp_path / "b.jsonl").read_text().splitlines()[1:]}
    assert logged == set(range(-(-int(done.worst_case.sum()) // 4)))  # one batch of <= 4 survivors each
