"""The command line's commands: each ``cmd_*`` builds specs from the parsed options, calls one library
function and prints."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import textwrap
import time
from pathlib import Path

import torch
from torch import nn

from .. import zoo
from ..atomic import atomic_write
from .._lock import folder_lock
from ..attacks import AttackSettings, get_attack
from ..corruptions.registry import named as corruptions_named
from ..data import balanced_loader, cache_dir, probe_used
from ..defense import IGDefense
from ..distributed import default_device
from ..eval.recorded import RecordedRun
from ..eval.sweep import SWEEP_ATTACKS
from ..rankings import Rankings
from ..rankings.lo_ir import lo_ir
from ..specs import DataSpec, DefenseSpec, ModelSpec, check_classes
from .options import from_args
from .resolve import clean_rankings_spec, defended_model, model_spec, plan_of, start_fresh, test_run


def cmd_demo(args) -> int:
    from ..eval.evaluate import evaluate
    from ..eval.report import demo_table

    torch.manual_seed(args.seed)
    spec, data_spec = model_spec(args), from_args(DataSpec, args)
    model = spec.load().to(default_device())
    loader, data = data_spec.loader("test", args.n, batch_size=args.batch_size)
    check_classes(model, data)
    defended, setting, rankings = defended_model(args, model, spec.name, data_spec, args.seed)
    attack = "autoattack" if args.full else "apgd-ce"
    # The base model's examples are cached, so the transfer attack (the defended model re-classifying
    # them) costs one forward pass.
    settings = from_args(AttackSettings, args, cache=cache_dir() / "adversarial", base_model=model,
                         transfer_from=(attack,))
    base = evaluate(model, loader, attacks=[attack], settings=settings, desc="undefended")
    dfd = evaluate(defended, loader, attacks=[attack, "transfer"], settings=settings, desc="IG-defended")
    name = "AutoAttack" if args.full else "APGD-CE"
    print(f"\nmodel {spec.name}, {len(data)} class-balanced images of {data.description}, "
          f"L-inf eps {settings.eps * 255:g}/255")
    print(f"defense: {setting.describe(defended)}; rankings from {rankings.probe}\n")
    print(demo_table(base, dfd, attack, name))
    print(textwrap.fill("The worst case counts an image as robust only if the model classifies it correctly clean "
                        "and under every attack in its row: it is the number to quote, not the white-box column. "
                        "Stronger attacks (IG-Defense's own adaptive attack, AutoAttack, APGD-CE with EOT, RayS) "
                        "and the sanity checks (BPDA among them): igdefense eval --cascade --sanity.", 100))
    return 0


def cmd_rank(args) -> int:
    model = model_spec(args).load().to(default_device())
    data = from_args(DataSpec, args).open("train")
    outputs = check_classes(model, data)
    loader = balanced_loader(data, batch_size=args.batch_size, per_class=args.per_class)
    probe = f"{data.description}, {probe_used(data, args.per_class)}"
    t0 = time.time()
    if args.method == "cd-ir":
        from ..rankings.cd_ir import cd_ir

        pretrained = None if args.pretrained.lower() == "none" else args.pretrained
        rankings = cd_ir(model, loader, list(data.classes), clip=args.clip, pretrained=pretrained, layer=args.layer,
                         probe=probe + f", CLIP {args.clip} ({pretrained or 'random init'})")
    else:
        names = list(data.classes) if len(data.classes) == outputs else None  # (when they name the outputs)
        rankings = lo_ir(model, loader, layer=args.layer, mode=args.mode, class_names=names, probe=probe)
    rankings.save(args.output)
    print(f"wrote {args.output}: {rankings.method} at {rankings.layer}, {rankings.num_classes} classes x "
          f"{rankings.num_neurons} neurons, {time.time() - t0:.1f}s")
    return 0


def cmd_compare(args) -> int:
    from ..rankings.compare import plot_jaccard, topk_jaccard

    a, b = Rankings.load(args.a), Rankings.load(args.b)
    jac = topk_jaccard(a, b, args.k)
    print(f"top-{args.k} overlap (Jaccard) per class, {a.method} ({args.a}) vs {b.method} ({args.b}):")
    for name, v in zip(a.class_names, jac.diagonal().tolist()):
        print(f"  {name:12} {v:.3f}")
    print(f"  {'mean':12} {jac.diagonal().mean():.3f}   (random sets: {args.k / (2 * a.num_neurons - args.k):.3f})")
    if args.plot:
        title = f"top-{args.k}: {a.method} (rows) vs {b.method}"
        print(f"wrote {plot_jaccard(jac, args.plot, a.class_names, b.class_names, title)}")
    return 0


def cmd_eval(args) -> int:
    from ..eval.benchmark import benchmark
    from ..eval.model_info import write_model_info
    from ..eval.report import markdown_table, summary_rows

    if args.screen and not args.cascade:
        raise ValueError("--screen needs --cascade (only a cascade's columns bound the worst case attack by attack)")
    rank, device, spec, data_spec, base, loader, data = test_run(args)
    defended, setting, rankings = defended_model(args, base, spec.name, data_spec, args.seed)
    models = {"base": base, f"{rankings.method}": defended}
    if args.random_mask:
        models["random-mask"] = setting.build(base, rankings.randomized(args.seed), seed=args.seed)
    corruptions = corruptions_named(args.corruptions)
    plan = plan_of(args, args.attacks, cascade=args.cascade, corruptions=corruptions, severities=args.severities)
    meta = {"model": spec.name, "rankings": rankings.probe, "k": defended.k, "sigma": defended.sigma,
            "defense": setting.describe(defended),
            "images": len(data), "data": f"{data.description}, {data_spec.selection()}",
            "run": {"command": args.command_line},
            "specs": RecordedRun(spec, data_spec, setting, args.n, args.batch_size, plan.settings).to_json()}
    if corruptions:
        meta["corruptions"] = f"CIFAR-10-C-style, CIFAR parameters, seed {args.seed}: {len(corruptions)} x " \
                              f"severities {','.join(map(str, args.severities))}"
    sanity_data = None
    if args.sanity:
        sanity_data = next(iter(data_spec.loader("test", args.sanity_n, batch_size=args.sanity_n)[0]))
    for name in args.add_attacks.split(","):  # (a typo is one line now, not after the evaluation's hours)
        if name:
            get_attack(name)
    with folder_lock(args.out):
        start_fresh(args)
        results = benchmark(models, loader, plan, out=args.out, baseline="base",
                            sanity=[rankings.method] if args.sanity else (), sanity_data=sanity_data, meta=meta,
                            screen=args.screen)
    if rank > 0:
        return 0
    print(markdown_table(summary_rows(results, "base")))
    for c in results[rankings.method].sanity:
        print(c)
    for name, r in results.items():
        if r.screened:
            print(f"{name}: screened after {r.screened}, its worst case is an upper bound (rerun without --screen to "
                  "run the rest)")
    finished = {name: m for name, m in models.items() if not results[name].screened}  # (no entry from a bound)
    info = write_model_info(args.out, spec.name, finished, results, data, plan.settings)
    print(f"wrote {Path(args.out) / 'report.md'}, report.json and {len(info)} RobustBench entries "
          f"({info[0].parent})")
    if args.add_attacks:
        _add_attacks(args, base, defended, rankings.method, results, loader, plan.settings)
    return 0


def _add_attacks(args, base: nn.Module, defended: IGDefense, name: str, results: dict, loader, settings) -> None:
    """``eval --add-attacks``: the finished evaluation's survivors of the defended model re-attacked."""
    from ..eval.survivors import attack_survivors
    from ..stats import paired_difference

    attacks = [a for a in args.add_attacks.split(",") if a]
    seed = args.seed + 1 if args.add_seed is None else args.add_seed
    log = Path(args.out) / "added" / f"{name}-{'+'.join(attacks)}-seed{seed}.jsonl"
    log.parent.mkdir(exist_ok=True)
    with folder_lock(log.parent):
        worst, added = attack_survivors(defended, results[name], loader, attacks,
                                        dataclasses.replace(settings, seed=seed, base_model=base), log_path=log)
    base_worst = results["base"].worst_case
    redrawn = int((~added.correct["clean"]).sum())  # (wrong on the clean image under the new seed's draws)
    broken = int((added.correct["clean"] & ~added.worst_case).sum())
    print(f"\n{name}'s {len(added.correct['clean'])} survivors re-attacked with {', '.join(attacks)} (seed {seed}, "
          f"log {log}): {broken} broken by the attacks, {redrawn} wrong on the clean image under seed {seed}'s draws"
          f"\n  worst case {100 * worst.float().mean():.1f}% (was {100 * results[name].worst_case_accuracy:.1f}%)"
          f"; vs base {paired_difference(base_worst, worst)} (was {paired_difference(base_worst, results[name].worst_case)})")


def cmd_report(args) -> int:
    from ..eval.runs import summarise, summary_markdown, worst_markdown, worst_over_runs_rows

    if missing := [str(f) for f in args.folders if not Path(f).is_dir()]:
        raise ValueError(f"no such folder: {', '.join(missing)} (give igdefense eval --out folders)")
    if len(args.folders) == 1:
        result = summarise(args.folders[0], args.baseline)
        print(summary_markdown(result))
    else:
        result = worst_over_runs_rows(args.folders, args.baseline)
        print(worst_markdown(result))
    if args.json:
        atomic_write(args.json, json.dumps({"command": args.command_line, **result}, indent=1)
                     + "\n")
        print(f"wrote {args.json}")
    return 0


def cmd_leaderboard(args) -> int:
    from ..eval.leaderboard import leaderboard_markdown, leaderboard_page, leaderboard_rows

    if missing := [str(f) for f in args.folders if not Path(f).is_dir()]:
        raise ValueError(f"not a folder: {', '.join(missing)} (give igdefense eval --out folders, or a folder of them)")
    folders = [f for d in map(Path, args.folders) for f in ([d] if (d / "report.json").exists() else sorted(d.iterdir()))]
    out = Path(args.output) if args.output else None
    rows = leaderboard_rows(folders, link=out and (lambda f: Path(os.path.relpath(f / "report.md", out.parent)).as_posix()))
    if not rows:
        raise ValueError(f"no igdefense eval report in {', '.join(map(str, args.folders))}")
    if out is None:
        print(leaderboard_markdown(rows), end="")
        return 0
    atomic_write(out, leaderboard_page(rows))
    print(f"wrote {out}: {len(rows)} rows")
    return 0


def cmd_sweep(args) -> int:
    rank, device, spec, data_spec, model, loader, data = test_run(args)
    out = Path(args.out)
    with folder_lock(out):
        start_fresh(args)
        return _sweep(args, spec, data_spec, model, loader, data, out, rank)


def _sweep(args, spec: ModelSpec, data_spec: DataSpec, model: nn.Module, loader, data, out: Path, rank: int) -> int:
    from ..eval.sweep import one_at_a_time, sweep, sweep_rankings

    name = spec.name
    plan = plan_of(args, args.attacks or ",".join(SWEEP_ATTACKS), cascade=True)
    clean_spec = clean_rankings_spec(args)
    clean = clean_spec.rankings_for(model, name, data_spec)
    rankings = sweep_rankings(model, clean, data_spec.open("train"), out, probe_per_class=args.probe_per_class,
                              settings=plan.settings, adversarial=args.adversarial_rankings, deep_layer=args.deep_layer)
    grid = one_at_a_time(tuple(rankings), shares=args.shares, sigmas=args.sigmas, n_samples=args.n_samples)
    meta = {"model": name, "images": len(data), "data": f"{data.description}, {data_spec.selection()}",
            "rankings": {k: r.probe for k, r in rankings.items()},
            "run": {"command": args.command_line},
            "specs": RecordedRun(spec, data_spec, clean_spec, args.n, args.batch_size, plan.settings).to_json()}
    result = sweep(model, rankings, loader, out=out, grid=grid, plan=plan, random_control=not args.no_random_control,
                   screen=not args.no_screen, seed=args.seed, meta=meta)
    if rank > 0:
        return 0
    print(result.table())
    best = result.save_best(out, rankings, probe_per_class=args.probe_per_class)
    if best is not None:
        seen = data_spec.offset + -(-len(data) // len(data.classes))  # (past this sweep's images of each class)
        print(f"best setting: {best} (igdefense.wrap(model, that file)); chosen on these images, where its gain is "
              f"optimistic: evaluate it on others, igdefense eval --setting {best} --offset {seen}")
    print(f"wrote {out / 'sweep.md'}, sweep.json and sweep.png")
    return 0


def cmd_train(args) -> int:
    from ..train import TrainConfig, train

    logging.getLogger("igdefense").setLevel(logging.INFO)  # a line per epoch / round (main's handler prints it)
    data = from_args(DataSpec, args).cifar10("train", "train")
    cfg = from_args(TrainConfig, args)
    train(cfg, args.output, data.source, fresh=args.fresh, progress=not args.quiet)
    print(f"wrote {args.output}")
    return 0


def cmd_refine(args) -> int:
    from ..data import balanced_indices
    from ..refine import RefineConfig, refine
    from ..zoo.weights_file import save_weights
    from ..distributed import is_main_process

    logging.getLogger("igdefense").setLevel(logging.INFO)  # a line per epoch / round (main's handler prints it)
    data = from_args(DataSpec, args).cifar10("train", "refine")
    if args.per_class:
        data.indices = balanced_indices(data.labels, per_class=args.per_class)
    model = zoo.load(args.base).to(default_device())
    reference = None if args.reference.lower() == "none" else zoo.load(args.reference).to(default_device())
    options = {f.name: getattr(args, f.name) for f in dataclasses.fields(RefineConfig)
               if getattr(args, f.name) is not None}  # every field has its --option
    refine(model, data, reference=reference, out_dir=args.out, progress=not args.quiet, fresh=args.fresh, **options)
    if is_main_process():
        path = Path(args.out) / "refined.safetensors"
        save_weights(model, path, {"refine": dataclasses.asdict(RefineConfig(**options))}, base=args.base,
                     reference=args.reference)
        print(f"wrote {path}; per-round log: {Path(args.out) / 'log.jsonl'}")
    return 0


def cmd_explain_robustness(args) -> int:
    from ..attribution.registry import attribution_method
    from ..explain.report import check_study_folder, write_study
    from ..explain.robustness import explanation_robustness

    check_study_folder(args.out)  # (before the study's minutes, and again under the folder's lock)
    torch.manual_seed(args.seed)
    methods = tuple(m for m in args.methods.split(",") if m)
    for m in methods:
        attribution_method(m, "pixels")  # (unknown: one line naming the choices)
    attacks = tuple(a for a in args.attacks.split(",") if a)
    spec, data_spec = model_spec(args), from_args(DataSpec, args)
    model, name = spec.load().to(default_device()), spec.name
    if args.defense:
        model, setting, _ = defended_model(args, model, spec.name, data_spec, args.seed)
        name += f" + IG-Defense (LO-IR, {setting.describe(model)})"
    loader, data = data_spec.loader("test", args.images, batch_size=args.images)
    check_classes(model, data)
    x, y = next(iter(loader))
    options = {"num_samples": args.num_samples}
    study, perturbed = explanation_robustness(model, x, y, eps=args.eps, attacks=attacks, methods=methods, q=args.q,
                                              seed=args.seed, progress=not args.quiet,
                                              sensitivity_samples=args.sensitivity, **options)
    meta = {"model": name, "images": len(x), "data": f"{data.description}, class-balanced", "eps": args.eps,
            "attacks": list(attacks), "methods": list(methods), "q": args.q, "lime_samples": args.num_samples,
            "sensitivity_samples": args.sensitivity, "seed": args.seed}
    report = write_study(args.out, model, study, x, y, perturbed, methods, meta, data.classes, seed=args.seed,
                         **options)
    print(report.read_text())
    print(f"wrote {report}, report.json and grid-<attack>.png in {args.out}")
    return 0


def cmd_corruptions(args) -> int:
    from ..corruptions import write_dataset
    from ..data import balanced_indices

    names = corruptions_named(args.names)
    data = from_args(DataSpec, args).cifar10(args.split, "corruptions")
    if args.per_class is not None:
        data.indices = balanced_indices(data.labels, per_class=args.per_class)
    source = f"CIFAR-10 ({data.kind}) {args.split}" + (f", first {args.per_class} per class" if args.per_class else "")
    with folder_lock(args.out):
        start_fresh(args)
        out = write_dataset(args.out, data, names=names, seed=args.seed, progress=not args.quiet, source=source)
    print(f"CIFAR-10-C-style (CIFAR parameters, seed {args.seed}): {len(names)} corruptions x 5 severities "
          f"of {len(data)} images in {out}")
    return 0


def cmd_export(args) -> int:
    from ..export import OnnxDefense, check_parity, to_onnx
    from ..export.onnx import made_from
    from ..export.sources import sources_metadata, stored_setting

    data = from_args(DataSpec, args)
    if args.check:
        session = OnnxDefense(args.check)
        cfg = session.config
        if not cfg:
            raise ValueError(f"{args.check} has no igdefense metadata; pass --model and --rankings")
        spec, rankings = _export_sources(args, session.metadata)
        model = spec.load()
        setting = dataclasses.replace(stored_setting(args.check, cfg), rankings=rankings,
                                      probe_per_class=args.probe_per_class or DefenseSpec.probe_per_class)
        defended = setting.build(model, setting.rankings_for(model, spec.name, data), seed=args.seed)
        if cfg.get("made_from") not in (None, made_from(defended)):  # (older exports record none)
            raise ValueError(f"{args.check} was made from other weights or rankings than {spec.name} and the rankings "
                             "its metadata (or your options) name: pass --model and --rankings of the model it was "
                             "exported from")
        report = check_parity(session, defended, data.loader("test", args.n)[0], seed=args.seed)
        for key, value in report.items():
            if key != "parity":
                print(f"{key:22} {value}")
        print("parity: " + ("OK" if report["parity"] else "FAILED"))
        return 0 if report["parity"] else 1
    if not args.output:
        print("igdefense: export needs -o model.onnx (or --check model.onnx)", file=sys.stderr)
        return 2
    spec = model_spec(args)
    defended, setting, _ = defended_model(args, spec.load(), spec.name, data, None)
    to_onnx(defended, args.output, opset=args.opset, noise=args.noise, metadata=sources_metadata(spec, setting))
    print(f"wrote {args.output} ({args.noise} noise, {setting.describe(defended)}, opset {args.opset})")
    return 0


def _export_sources(args, meta: dict[str, str]) -> tuple[ModelSpec, str | None]:
    """The model and rankings of ``export --check``: what the user typed, and only where they typed
    nothing, what the file's metadata says (:mod:`igdefense.export.sources`)."""
    from ..export.sources import stored_model, stored_rankings

    rankings = args.rankings if args.rankings is not None else stored_rankings(meta)
    if args.name:  # (the metadata's model options belong to the exported model, not to this one)
        return model_spec(args), rankings
    return from_args(ModelSpec, args, stored_model(args.check, meta)), rankings
