"""Robustness evaluation: clean accuracy, attacks from pyautoattack, per-image results.

Every attack's adversarial examples are re-classified by the model afterwards, so an attack's
own (possibly lucky, for a randomized model) bookkeeping never decides a result.
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from .._hooks import model_device, model_dtype
from .._identity import FIX, StateMismatch, tensor_digest
from .._lock import folder_lock
from .._validation import check_images, check_labels, in_train_mode
from ..corruptions import SEVERITIES
from ..defense import RandomizedDefense
from . import log as runlog
from ..attacks import AttackSettings, check_in_ball, run_attack
from .plan import MODEL_FREE, Plan, is_corruption
from .scoring import HEADLINE, RULES, columns, right_draws, survivors
from ..distributed import shard

log = logging.getLogger(__name__)


@dataclass
class EvalResult:
    """Per-image outcomes. ``correct[name]`` is a bool tensor (N,): True where the model is right
    on the clean image (``"clean"``) or on that attack's adversarial example; for a randomized
    defense scored over ``draws`` draws, under the majority rule (:mod:`igdefense.eval.scoring`),
    and under each rule in ``by_rule``."""

    correct: dict[str, torch.Tensor] = field(default_factory=dict)
    eps: float = AttackSettings.eps
    cascade: bool = False  # True: each attack after the first counts the images surviving it *and* all before
    draws: int = 1  # noise draws each example was classified under (1: a deterministic model)
    by_rule: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)  # {rule: columns like correct}
    right_draws: dict[str, torch.Tensor] = field(default_factory=dict)  # per step, (N,) draws right (not cumulative)
    sanity: list = field(default_factory=list)  # igdefense.eval.sanity.Check results (benchmark(..., sanity=[name]))
    screened: str | None = None  # benchmark(..., screen=True): the attack after which it could no longer gain
    adversarial: dict[str, torch.Tensor] = field(default_factory=dict)  # evaluate(..., keep_adversarial=True)
    # Seconds each step took, summed over the batches; from the log for the parts of an earlier run.
    seconds: dict[str, float] = field(default_factory=dict)
    untimed: int = 0  # (batch, step) results whose time is unknown (logs written before times were kept)

    @property
    def total_seconds(self) -> float:
        """The evaluation's whole time (a lower bound where ``untimed`` > 0)."""
        return sum(self.seconds.values())

    @property
    def clean_accuracy(self) -> float:
        return self.correct["clean"].float().mean().item()

    @property
    def robust_accuracy(self) -> dict[str, float]:
        return {k: v.float().mean().item() for k, v in self.correct.items() if k != "clean" and not is_corruption(k)}

    @property
    def worst_case(self) -> torch.Tensor:
        """Image-wise worst case: right on the clean image and under every attack (corruptions aside)."""
        out = self.correct["clean"].clone()
        for k, v in self.correct.items():
            if not is_corruption(k):
                out &= v
        return out

    @property
    def corruption_accuracy(self) -> dict[str, dict[int, float]]:
        """{corruption: {severity: accuracy}} for the corruptions evaluated."""
        out: dict[str, dict[int, float]] = {}
        for k, v in self.correct.items():
            if is_corruption(k):
                name, severity = k.split("@")
                out.setdefault(name, {})[int(severity)] = v.float().mean().item()
        return out

    @property
    def corruption_per_image(self) -> torch.Tensor:
        """(N,) fraction of the corrupted versions of each image the model gets right."""
        columns = [v.float() for k, v in self.correct.items() if is_corruption(k)]
        if not columns:
            raise ValueError("no corruptions were evaluated: pass corruptions=... to evaluate()")
        return torch.stack(columns).mean(0)

    @property
    def mean_corruption_accuracy(self) -> float:
        """Mean over every corruption and severity evaluated (RobustBench's corruption accuracy)."""
        return self.corruption_per_image.mean().item()

    @property
    def worst_case_accuracy(self) -> float:
        return self.worst_case.float().mean().item()

    def worst_case_under(self, rule: str) -> torch.Tensor:
        """The image-wise worst case under a scoring rule ("one-draw", "majority", "every-draw");
        for a deterministic model every rule is ``worst_case``."""
        if rule not in RULES:
            raise ValueError(f"unknown rule {rule!r}; choose from {RULES}")
        if not self.by_rule:
            return self.worst_case
        return EvalResult(self.by_rule[rule]).worst_case

    @property
    def expected_worst_case(self) -> torch.Tensor:
        """(N,) float: per image, the fraction of draws it is right under, on its clean image and on
        its worst attack's example (in a cascade, an attack that no longer ran on it counts 0)."""
        if not self.right_draws:
            return self.worst_case.float()
        return torch.stack([v.float() for v in self.right_draws.values()]).amin(0) / self.draws

    def first(self, n: int) -> "EvalResult":
        """The results on the first ``n`` images (e.g. those every model of a running evaluation has done)."""
        cut = lambda d: {k: v[:n] for k, v in d.items()}  # noqa: E731
        return EvalResult(cut(self.correct), self.eps, self.cascade, draws=self.draws,
                          by_rule={r: cut(c) for r, c in self.by_rule.items()}, right_draws=cut(self.right_draws),
                          screened=self.screened)


def evaluate(model: nn.Module, data: Iterable | tuple[torch.Tensor, torch.Tensor],
             attacks: Sequence[str] = ("apgd-ce",), *, settings: AttackSettings | None = None,
             cascade: bool = False, corruptions: Sequence[str] = (), severities: Sequence[int] = SEVERITIES,
             **options) -> EvalResult:
    """Clean accuracy and accuracy under each attack, per image: :func:`evaluate_plan` of
    ``Plan(attacks, settings, cascade, corruptions, severities)`` (:class:`~igdefense.eval.plan.Plan`
    says what each does); ``options`` are :func:`evaluate_plan`'s (``log_path``, ``until``, ...)."""
    return evaluate_plan(model, data, Plan(attacks, settings or AttackSettings(), cascade, corruptions, severities),
                         **options)


def evaluate_plan(model: nn.Module, data: Iterable | tuple[torch.Tensor, torch.Tensor], plan: Plan, *,
                  log_path: str | os.PathLike | None = None, until: str | None = None,
                  keep_adversarial: bool = False, whole_data: bool = True, progress: bool = True,
                  desc: str = "evaluating") -> EvalResult:
    """Run ``plan`` on ``model``: clean accuracy and accuracy under each attack, per image.

    Args:
        model: classifier or defended model (eval mode is set by the caller).
        data: a DataLoader of (images, labels) or one (images, labels) pair of tensors; images
            (B, C, H, W) float in [0, 1], labels (B,) integer class indices.
        plan: the attacks, their settings, the cascade and the corruptions. Batch i is corrupted
            with the seeds the dataset writer (``igdefense corruptions``) gives chunk i; its images are
            not that dataset's (taken otherwise, and not rounded to 8 bits).
        log_path: a JSONL file that gets a line after the clean pass and after each attack of a
            batch (with the seconds each step took); an interrupted run given the same file (and the
            same data, in the same order) resumes at the step it was in.
        until: with a cascade, stop after this attack (in run order); the result holds the steps up
            to it. The log is the whole cascade's, so a later call without ``until`` goes on from there.
        keep_adversarial: keep each attack's examples in ``result.adversarial`` (on the CPU): per
            image the first candidate that fooled the model, else the clean image (as AutoAttack's
            x_adv); memory grows with the data, and every step must run in this call (not
            resumed from ``log_path``), in one process.
        whole_data: False when ``data`` is the first batches of what the log was written for
            (:func:`benchmark` runs batch by batch); True (default): a log holding later batches
            was written for other data and is refused.

    A randomized defense's clean images and examples are each classified under ``settings.draws``
    draws of its noise; ``result.correct`` holds the majority rule, ``result.by_rule`` every rule,
    ``result.right_draws`` the counts (:mod:`igdefense.eval.scoring`). An attack added to a log's
    attacks runs after those the log holds, on the images still standing; the others are read back.

    A :class:`~igdefense.defense.RandomizedDefense` (IGDefense) is reseeded from the seed, the batch index and the step
    before the clean pass and each attack, so its noise does not depend on what ran before: a
    resumed or sharded run gets the same results as an uninterrupted one. Under
    ``torch.distributed`` (e.g. torchrun) batches are sharded round-robin across processes and
    the results gathered; each process writes ``<log_path>.rank<r>``, and a resumed run reads every
    process's log, so it may use another number of processes.
    """
    which = in_train_mode(model)
    if which is not None:
        raise ValueError(f"an evaluation runs the model in eval mode only, but {which} is in train mode (batch norm "
                         f"and dropout would change its answers, and the attacks its statistics): call model.eval()")
    if until is not None and (not plan.cascade or until not in plan.attacks):
        raise ValueError(f"until={until!r} needs cascade=True and one of the attacks {list(plan.attacks)}")
    order = plan.order(log_path)
    steps = order[:order.index(until) + 1] if until else order
    batches = [data] if isinstance(data, tuple) else data
    header = plan.header(model, order)
    rank, world = shard()
    if keep_adversarial and world > 1:
        raise ValueError("keep_adversarial works in one process; under torchrun write the examples per shard yourself")
    with folder_lock(Path(log_path).parent, "evaluation") if log_path else nullcontext():
        return _run(model, batches, plan, steps, header, keep_adversarial, log_path, desc, progress, whole_data)


def check_log(log_path: Path, model: nn.Module, plan: Plan) -> None:
    """Raise (one line) unless the logs at ``log_path`` (every process's) are of this run: what
    :func:`evaluate_plan` would do on reading them, before anything runs (:func:`benchmark` checks
    every model's log before it writes to any)."""
    _read_logs(Path(log_path), plan.header(model, plan.order(log_path)), plan)


def _own_log(log_path: Path) -> Path:
    """The log this process writes: ``<log_path>.rank<r>`` under torchrun, else ``log_path``."""
    rank, world = shard()
    return Path(f"{log_path}.rank{rank}") if world > 1 else log_path


def _read_logs(log_path: Path, header: dict, plan: Plan) -> dict[int, dict]:
    """Every process's records of this run at ``log_path``, by batch (refused if of another run)."""
    return runlog.read_logs(log_path, _own_log(log_path), header, ["clean", *plan.attacks, *plan.corruption_keys],
                            header["settings"]["draws"])


def _run(model, batches, plan: Plan, steps, header, keep_adversarial, log_path, desc, progress,
         whole_data) -> EvalResult:
    """The body of :func:`evaluate_plan`, its arguments checked (and its output folder held)."""
    attacks, settings, cascade, keys = plan.attacks, plan.settings, plan.cascade, plan.corruption_keys
    eps, seed = settings.eps, settings.seed
    device = model_device(model)
    rank, world = shard()
    adversarial: dict[str, list[torch.Tensor]] | None = {a: [] for a in attacks} if keep_adversarial else None
    own_log = _own_log(Path(log_path)) if log_path else None
    # One line per finished step (clean, then each attack) of a batch, each holding the batch's
    # results so far: a run stopped mid-batch resumes at the attack it was in, not the batch's start.
    done = _read_logs(Path(log_path), header, plan) if log_path else {}
    if whole_data and hasattr(batches, "__len__"):  # (else checked once the batches are counted)
        _check_batches(done, len(batches), log_path)
    mine: dict[int, dict[str, list[int]]] = {}
    n_batches = 0
    for i, (x, y) in enumerate(tqdm(batches, desc=desc, disable=not progress or rank > 0)):
        n_batches += 1
        if i % world != rank:
            continue
        check_images(x, (0.0, 1.0), name=f"images (batch {i})")
        if not len(x):
            raise ValueError(f"batch {i} holds no images")
        check_labels(y, len(x), name=f"labels (batch {i})")
        digest = tensor_digest(x, y)[:32]
        record = done.get(i, {"batch": i, "digest": digest})
        if record.get("digest") != digest or any(len(v) != len(y) for k, v in record.items()
                                                 if k not in runlog.RECORD_META):
            raise StateMismatch(f"{log_path}: batch {i} was computed on other images (their digest differs): the "
                                f"data or its order changed since; {FIX}")
        if "clean" in record and i in done:  # (one forward: a log's results must be this model's)
            _recheck_clean(model, x.to(device, model_dtype(model)), y.to(device, torch.long), record["clean"],
                           seed + i, f"{log_path}: batch {i}")

        def save(step: str, result: torch.Tensor, counts: torch.Tensor | None, seconds: float,
                 write: bool = True) -> None:
            record[step] = result.int().tolist()
            if counts is not None:
                record.setdefault("draws", {})[step] = counts.tolist()
            record.setdefault("seconds", {})[step] = round(seconds, 2)
            if own_log and write:
                runlog.append(Path(own_log), header, record)

        if adversarial is not None and any(a in record for a in attacks):
            raise ValueError(f"keep_adversarial needs every attack run in this call, but {log_path} already holds "
                             f"batch {i}'s results: use a new log file")
        if not all(k in record for k in ["clean", *keys, *steps]):
            known = {k: torch.tensor(v, dtype=torch.bool) for k, v in record.items() if k not in runlog.RECORD_META}
            counts = {k: torch.tensor(v, dtype=torch.long) for k, v in record.get("draws", {}).items()}
            # in the model's dtype (float16 images, a float64 model) and as int64 class indices (int32 labels):
            # what the attacks compute in and the eps-ball is checked in
            x, y = x.to(device, model_dtype(model)), y.to(device, torch.long)
            _evaluate_batch(model, x, y, attacks, steps, settings, cascade, seed + i, known, counts, save,
                            adversarial)
            _evaluate_corruptions(model, x, y, keys, seed, i, known, save)
        mine[i] = record
    if not n_batches:
        raise ValueError("data holds no batches")
    if whole_data:
        _check_batches(done, n_batches, log_path)
    if world > 1:
        gathered: list = [None] * world
        torch.distributed.all_gather_object(gathered, mine)
        mine = {i: r for part in gathered for i, r in part.items()}
    order = sorted(mine)
    names = ["clean", *steps, *keys]
    bits = {k: torch.tensor([v for i in order for v in mine[i][k]], dtype=torch.bool) for k in names}
    draws = settings.draws if isinstance(model, RandomizedDefense) else 1
    counts = {k: torch.tensor([v for i in order for v in mine[i]["draws"][k]], dtype=torch.long)
              for k in ["clean", *steps]} if draws > 1 else {}
    by_rule = {r: {**columns(bits, counts, draws, steps, cascade, r), **{k: bits[k] for k in keys}} for r in RULES}
    result = EvalResult(by_rule[HEADLINE], eps, cascade, draws=draws, by_rule=by_rule if draws > 1 else {},
                        right_draws=counts)
    times = [mine[i].get("seconds", {}) for i in order]
    result.seconds = {k: sum(t.get(k, 0.0) for t in times) for k in names}
    result.untimed = sum(k not in t for t in times for k in names)
    if adversarial is not None:
        result.adversarial = {a: torch.cat(v) for a, v in adversarial.items()}
    return result


def _recheck_clean(model, x, y, logged: list[int], batch_seed: int, where: str) -> None:
    """Classify the clean images again (a randomized model under the same first draw) and refuse a log
    whose clean results are not this model's: edited, or another model's. An image whose two best
    logits are all but tied may come out either way on another CPU's kernels; only such images may differ."""
    if isinstance(model, RandomizedDefense):
        model.reseed(batch_seed * 1000)  # (as _evaluate_batch draws the clean pass's noise)
    with torch.no_grad():
        logits = model(x).float()
    right = (logits.argmax(1) == y).cpu()
    differ = right != torch.tensor(logged, dtype=torch.bool)
    if differ.any():
        top = logits.topk(2, dim=1).values.cpu()
        tied = (top[:, 0] - top[:, 1]) <= 1e-4 * top.abs().amax(1).clamp(min=1)
        if not tied[differ].all():
            raise StateMismatch(f"{where}: its clean results differ from this model's on {int((differ & ~tied).sum())} "
                                f"image(s): the log was edited, or written by another model; {FIX}")


def _check_batches(done: dict[int, dict], n_batches: int, log_path) -> None:
    beyond = sorted(b for b in done if b >= n_batches)
    if beyond:
        raise StateMismatch(f"{log_path} holds results for batch {beyond[0]}, but the data has {n_batches} batches: "
                            f"it was written for more or other data; {FIX}")


def _evaluate_batch(model, x, y, attacks, run: Sequence[str], settings: AttackSettings, cascade: bool,
                    batch_seed: int,
                    known: dict[str, torch.Tensor], counts: dict[str, torch.Tensor], save: Callable[..., None],
                    adversarial: dict[str, list[torch.Tensor]] | None = None) -> None:
    """Clean and attack results of one batch, each passed to ``save`` when finished; steps in
    ``known`` (from an interrupted run) are not redone. ``known[step]``: right under the first draw
    (an attack: on every candidate); ``counts[step]``: a randomized model's draws right
    (:mod:`igdefense.eval.scoring`). ``adversarial``: each attack's examples (first fooling
    candidate, else the clean image) are appended there. ``run``: the attacks run, in their order."""
    steps = ["clean", *attacks]
    order = ["clean", *run]
    draws = settings.draws if isinstance(model, RandomizedDefense) else 1
    for done_before, name in enumerate(order):
        if name in known:
            continue
        start = time.perf_counter()
        if isinstance(model, RandomizedDefense):
            # Noise depends on (batch, attack) only, not on what ran before: shards and resumed runs agree.
            model.reseed(batch_seed * 1000 + steps.index(name))
        if name == "clean":
            with torch.no_grad():
                logits = model(x)
            check_labels(y, len(x), logits.shape[1])
            known["clean"] = (logits.argmax(1) == y).cpu()
            if draws > 1:
                counts["clean"] = right_draws(model, [x], [known["clean"]], y, draws)
            save("clean", known["clean"], counts.get("clean"), time.perf_counter() - start)
            continue
        ok = survivors(known, counts, draws, [])
        alive = survivors(known, counts, draws, order[1:done_before])  # right so far (one-draw or majority)
        # Attacks skip misclassified images themselves, so until an attack breaks an image the
        # whole batch is attacked (identical batches let cached base-model examples be reused).
        rows = torch.arange(len(y))
        if cascade and name not in MODEL_FREE and not torch.equal(alive, ok):
            rows = alive.nonzero().squeeze(1)
        survived = torch.zeros_like(known["clean"])
        survived[rows] = known["clean"][rows]
        kept = x.detach().cpu().clone() if adversarial is not None else None
        candidates, firsts = [], []
        if len(rows):
            xs, ys = x[rows.to(x.device)], y[rows.to(y.device)]
            for x_adv in run_attack(name, model, xs, ys, settings):
                if settings.norm == "Linf":
                    check_in_ball(name, x_adv, xs, settings.eps)
                with torch.no_grad():
                    right = (model(x_adv).argmax(1) == ys).cpu()
                if kept is not None:  # the first candidate that fools the model on an image still fooled by none
                    first = ~right & survived[rows]
                    kept[rows[first]] = x_adv.detach().cpu()[first]
                survived[rows] &= right
                candidates.append(x_adv)
                firsts.append(right)
        known[name] = survived  # (an image not attacked: False, broken before under every rule)
        if draws > 1:
            counts[name] = torch.zeros(len(y), dtype=torch.long)
            if len(rows):  # after the first draw of every candidate, so that the first stays the one it was
                counts[name][rows] = right_draws(model, candidates, firsts, ys, draws)
        if adversarial is not None:
            adversarial[name].append(kept)
        save(name, known[name], counts.get(name), time.perf_counter() - start)


def _evaluate_corruptions(model, x, y, keys: Sequence[str], seed: int, batch: int, known: dict[str, torch.Tensor],
                          save: Callable[..., None]) -> None:
    """Accuracy on the batch corrupted by each "name@severity" in ``keys`` not already ``known``,
    saved once at the end: a log line per key would repeat the batch's results 95 times over."""
    from ..corruptions import corrupt
    from ..corruptions.dataset import chunk_seed

    todo = [(step, key) for step, key in enumerate(keys) if key not in known]
    for step, key in todo:
        start = time.perf_counter()
        name, severity = key.split("@")
        if isinstance(model, RandomizedDefense):
            model.reseed((seed + batch) * 1000 + 500 + step)  # apart from the attacks' steps (< 500)
        x_c = corrupt(x, name, int(severity), seed=chunk_seed(seed, name, int(severity), batch))
        with torch.no_grad():
            known[key] = (model(x_c).argmax(1) == y).cpu()
        save(key, known[key], None, time.perf_counter() - start, write=step == todo[-1][0])
