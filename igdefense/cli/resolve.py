"""From a parsed command line to what it names: the specs (model, data, defense, attack settings),
the objects they build, and the specs a run's report records (``--dry-run`` prints them)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch
from torch import nn

from .. import zoo
from ..attacks import AttackSettings
from ..data import cache_dir
from ..defense import IGDefense
from ..distributed import start_fresh_once
from ..eval.plan import Plan
from ..eval.recorded import RecordedRun
from ..eval.sweep import SWEEP_ATTACKS
from ..models import model_source
from ..rankings import Rankings
from ..specs import DataSpec, DefenseSpec, ModelSpec, check_classes
from .options import from_args


def specs(args: argparse.Namespace) -> tuple[ModelSpec, DataSpec, DefenseSpec]:
    """The model, data and defense a parsed command line names (``build_parser().parse_args(...)``)."""
    model = model_spec(args)
    return model, from_args(DataSpec, args), defense_spec(args, model.name)


def recorded_run(args: argparse.Namespace) -> RecordedRun:
    """What an ``eval`` or ``sweep`` command line runs, as its report records it."""
    model, data, defense = specs(args)
    attacks = args.attacks
    if args.command == "sweep":
        defense, attacks = clean_rankings_spec(args), args.attacks or ",".join(SWEEP_ATTACKS)
    return RecordedRun(model, data, defense, args.n, args.batch_size, plan_of(args, attacks).settings)


def dry_run(args) -> int:
    """``eval`` and ``sweep`` with ``--dry-run``: the specs the run would record, and nothing run
    (what is cheap to check is checked: the model's name, the file it names)."""
    run = recorded_run(args)
    if model_source(run.model.name).names_a_file and not Path(run.model.name.split(":")[0]).is_file():
        raise FileNotFoundError(f"--model {run.model.name}: no such file")
    print(json.dumps(run.to_json(), indent=1))
    return 0


def clean_rankings_spec(args) -> DefenseSpec:
    """A sweep's clean rankings (its settings are its grid)."""
    return DefenseSpec(probe_per_class=args.probe_per_class)


def model_spec(args) -> ModelSpec:
    """The model ``--model`` and its options name (the command's default model where none is typed)."""
    return from_args(ModelSpec, args, ModelSpec(name=args.default_model or zoo.default_model()))


def test_run(args):
    """What ``eval`` and ``sweep`` start from: (rank, device, model spec, data spec, model on the
    device, loader, dataset) for ``--n`` test images, seeded, under torchrun when launched so."""
    from ..distributed import init_distributed

    torch.manual_seed(args.seed)
    rank, device = init_distributed()
    spec, data_spec = model_spec(args), from_args(DataSpec, args)
    model = spec.load().to(device)
    loader, data = data_spec.loader("test", args.n, batch_size=args.batch_size)
    check_classes(model, data)
    return rank, device, spec, data_spec, model, loader, data


def defense_spec(args, model: str) -> DefenseSpec:
    """The defense: ``--setting FILE``, else the model's own (its tuned setting, or the paper's), with
    each option typed put over it."""
    base = DefenseSpec.load(args.setting) if getattr(args, "setting", None) else DefenseSpec.for_model(model)
    if getattr(args, "k", None) is not None or getattr(args, "share", None) is not None:  # (the one typed wins)
        base = dataclasses.replace(base, k=None, share=None)
    return from_args(DefenseSpec, args, base)


def defended_model(args, model: nn.Module, name: str, data: DataSpec, seed: int | None
              ) -> tuple[IGDefense, DefenseSpec, Rankings]:
    spec = defense_spec(args, name)
    rankings = spec.rankings_for(model, name, data)
    return spec.build(model, rankings, seed=seed), spec, rankings


def plan_of(args, attacks: str, **fields) -> Plan:
    """The plan of ``eval`` and ``sweep``: the comma-separated ``attacks`` under the common options
    (eps, seed, EOT and scoring draws), crafted examples of deterministic models cached."""
    settings = from_args(AttackSettings, args, cache=cache_dir() / "adversarial")
    names = [a for a in attacks.split(",") if a]
    if not names:
        raise ValueError("--attacks names no attack; an evaluation without one measures no robustness: name one "
                         "or more, e.g. --attacks apgd-ce")
    return Plan(names, settings, **fields)


def start_fresh(args) -> None:
    """``--fresh``: the run starts over and loses nothing (what ``--out`` held goes to a backup folder)."""
    if getattr(args, "fresh", False) and (backup := start_fresh_once(args.out)) is not None:
        print(f"--fresh: kept what {args.out} held in {backup}", file=sys.stderr)
