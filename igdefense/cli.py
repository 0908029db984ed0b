"""The ``igdefense`` command line: demo, eval, rank, compare, export, train."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import re
import sys
import textwrap
import time
from pathlib import Path

import torch
from torch import nn

from . import zoo
from ._atomic import atomic_path
from ._identity import FIX, StateMismatch, model_digest, short_digest
from ._lock import FolderBusy, folder_lock, start_fresh
from .attribution.methods import METHODS
from .data import balanced_loader, cache_dir, probe_used
from .defense import SIGMA, TAU, IGDefense
from .distributed import default_device
from .attacks import ATTACKS, AttackSettings
from .eval.plan import Plan
from .eval.sweep import SWEEP_ATTACKS
from .export.onnx import ExportError
from ._parse import count, listof, natural, pathname, radius, real, severities, whole
from .specs import DataSpec, DefenseSpec, ModelSpec, add_options, check_classes, from_args
from .precision import PRECISIONS
from .zoo.models import ARCHITECTURES
from .train import TRAINING_ATTACKS
from .rankings import Rankings
from .rankings.lo_ir import lo_ir
from ._validation import json_loads


def specs(args: argparse.Namespace) -> tuple[ModelSpec, DataSpec, DefenseSpec]:
    """The model, data and defense a parsed command line names (``build_parser().parse_args(...)``):
    what a benchmark re-reading a report's recorded command rebuilds."""
    model = _model_spec(args)
    return model, _data_spec(args), _defense_spec(args, model.name)


def _model_spec(args) -> ModelSpec:
    """The model ``--model`` and its options name (the command's default model where none is typed)."""
    return from_args(ModelSpec, args, ModelSpec(name=args.default_model or zoo.default_model()))


def _data_spec(args) -> DataSpec:
    return from_args(DataSpec, args)


def _test_run(args):
    """What ``eval`` and ``sweep`` start from: (rank, device, model spec, data spec, model on the
    device, loader, dataset) for ``--n`` test images, seeded, under torchrun when launched so."""
    from .distributed import init_distributed

    torch.manual_seed(args.seed)
    rank, device = init_distributed()
    spec, data_spec = _model_spec(args), _data_spec(args)
    model = spec.load().to(device)
    loader, data = data_spec.loader("test", args.n, batch_size=args.batch_size)
    check_classes(model, data)
    return rank, device, spec, data_spec, model, loader, data


def _defense_spec(args, model: str) -> DefenseSpec:
    """The defense: ``--setting FILE``, else the model's own (its tuned setting, or the paper's), with
    each option typed put over it."""
    base = DefenseSpec.load(args.setting) if getattr(args, "setting", None) else DefenseSpec.for_model(model)
    return from_args(DefenseSpec, args, base)


def _defended(args, model: nn.Module, name: str, data: DataSpec, seed: int | None
              ) -> tuple[IGDefense, DefenseSpec, Rankings]:
    spec = _defense_spec(args, name)
    rankings = spec.rankings_for(model, name, data)
    return spec.build(model, rankings, seed=seed), spec, rankings


def cmd_demo(args) -> int:
    from .eval.evaluate import evaluate
    from .stats import paired_difference

    torch.manual_seed(args.seed)
    spec, data_spec = _model_spec(args), _data_spec(args)
    model = spec.load().to(default_device())
    loader, data = data_spec.loader("test", args.n, batch_size=args.batch_size)
    check_classes(model, data)
    defended, setting, rankings = _defended(args, model, spec.name, data_spec, args.seed)
    attack = "autoattack" if args.full else "apgd-ce"
    # The base model's examples are cached, so the transfer attack (the defended model re-classifying
    # them) costs one forward pass.
    settings = AttackSettings(eps=args.eps, seed=args.seed, cache=cache_dir() / "adversarial", base_model=model,
                              transfer_from=(attack,))
    base = evaluate(model, loader, attacks=[attack], settings=settings, desc="undefended")
    dfd = evaluate(defended, loader, attacks=[attack, "transfer"], settings=settings, desc="IG-defended")
    name = "AutoAttack" if args.full else "APGD-CE"
    print(f"\nmodel {spec.name}, {len(data)} class-balanced images of {data.description}, "
          f"L-inf eps {args.eps * 255:g}/255")
    print(f"defense: {setting.describe(defended)}; rankings from {rankings.probe}\n")
    cols = ["clean", f"{name} (white-box)", f"{name} from the base (transfer)", "worst case"]
    print(f"{'':13}" + "".join(f"{c:>{len(c) + 3}}" for c in cols))
    for label, r, transfer in (("undefended", base, None), ("IG-defended", dfd, dfd.robust_accuracy["transfer"])):
        values = [r.clean_accuracy, r.robust_accuracy[attack], transfer, r.worst_case_accuracy]
        print(f"{label:13}" + "".join(f"{'-' if v is None else f'{100 * v:.1f}%':>{len(c) + 3}}"
                                      for c, v in zip(cols, values)))
    print(f"\nworst case, IG-defended minus undefended: {paired_difference(base.worst_case, dfd.worst_case)}")
    if dfd.by_rule:
        one, every = (100 * dfd.worst_case_under(r).float().mean().item() for r in ("one-draw", "every-draw"))
        print(f"IG-Defense draws noise: each image counts when right under more than half of {dfd.draws} draws "
              f"(worst case under the first draw alone {one:.1f}%, under every draw {every:.1f}%)")
    print(textwrap.fill("The worst case counts an image as robust only if the model classifies it correctly clean "
                        "and under every attack in its row: it is the number to quote, not the white-box column. "
                        "Stronger attacks (IG-Defense's own adaptive attack, AutoAttack, APGD-CE with EOT, RayS) "
                        "and the sanity checks (BPDA among them): igdefense eval --cascade --sanity.", 100))
    return 0


def cmd_rank(args) -> int:
    model = _model_spec(args).load().to(default_device())
    data = _data_spec(args).open("train")
    outputs = check_classes(model, data)
    loader = balanced_loader(data, batch_size=args.batch_size, per_class=args.per_class)
    probe = f"{data.description}, {probe_used(data, args.per_class)}"
    t0 = time.time()
    if args.method == "cd-ir":
        from .rankings.cd_ir import cd_ir

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
    from .rankings.compare import plot_jaccard, topk_jaccard

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
    from .eval.benchmark import benchmark
    from .eval.report import markdown_table, summary_rows

    rank, device, spec, data_spec, base, loader, data = _test_run(args)
    defended, setting, rankings = _defended(args, base, spec.name, data_spec, args.seed)
    models = {"base": base, f"{rankings.method}": defended}
    if args.random_mask:
        models["random-mask"] = setting.build(base, rankings.randomized(args.seed), seed=args.seed)
    corruptions = _corruption_names(args.corruptions)
    meta = {"model": spec.name, "rankings": rankings.probe, "k": defended.k, "sigma": defended.sigma,
            "defense": setting.describe(defended),
            "images": len(data), "data": f"{data.description}, class-balanced (ordered by class)",
            "run": {"command": "igdefense " + " ".join(sys.argv[1:])}}
    if corruptions:
        meta["corruptions"] = f"CIFAR-10-C-style, CIFAR parameters, seed {args.seed}: {len(corruptions)} x " \
                              f"severities {','.join(map(str, args.severities))}"
    sanity_data = None
    if args.sanity:
        sanity_data = next(iter(data_spec.loader("test", args.sanity_n, batch_size=args.sanity_n)[0]))
    plan = _plan(args, args.attacks, cascade=args.cascade, corruptions=corruptions, severities=args.severities)
    with folder_lock(args.out):
        _fresh(args)
        results = benchmark(models, loader, plan, out=args.out, baseline="base",
                            sanity=[rankings.method] if args.sanity else (), sanity_data=sanity_data, meta=meta)
    if rank > 0:
        return 0
    print(markdown_table(summary_rows(results, "base")))
    for c in results[rankings.method].sanity:
        print(c)
    info = _model_info(args.out, spec.name, models, results, data, plan.settings)
    print(f"wrote {Path(args.out) / 'report.md'}, report.json and {len(info)} RobustBench entries "
          f"({info[0].parent})")
    return 0


def _plan(args, attacks: str, **fields) -> Plan:
    """The plan of ``eval`` and ``sweep``: the comma-separated ``attacks`` under the common options
    (eps, seed, EOT and scoring draws), crafted examples of deterministic models cached."""
    settings = AttackSettings(eps=args.eps, seed=args.seed, eot_iter=args.eot_iter, draws=args.draws,
                              cache=cache_dir() / "adversarial", precision=args.precision)
    names = [a for a in attacks.split(",") if a]
    if not names:
        raise ValueError("--attacks names no attack; an evaluation without one measures no robustness: name one "
                         "or more, e.g. --attacks apgd-ce")
    return Plan(names, settings, **fields)


def _model_info(out, model_name: str, models: dict, results: dict, data, settings: AttackSettings) -> list[Path]:
    """``--out``/model_info/<dataset>/<threat>/<model>_<name>.json: each evaluated model as a RobustBench entry."""
    from .eval.model_info import entry, write_entries

    dataset = {"CIFAR10": "cifar10", "CIFAR100": "cifar100"}.get(type(data).__name__, "")
    base = models["base"]
    architecture = type(getattr(base, "model", base)).__name__  # (inside a Normalized wrapper)
    slug = re.sub(r"[^\w.+-]+", "-", model_name)
    entries = {}
    for name, model in models.items():
        defended = isinstance(model, IGDefense)
        label = model_name if not defended else \
            f"{model_name} + IG-Defense ({name}, k={model.k}, sigma {255 * model.sigma:g}/255)"
        entries[f"{slug}_{name}"] = entry(
            results[name], name=label, architecture=architecture + (" + IG-Defense" if defended else ""),
            dataset=dataset, eps=settings.eps, norm=settings.norm, data=data.description,
            forward_passes=model.n_samples + 1 if defended else 1, defense=_defense_note(name) if defended else "",
            additional_data=False if model_name.startswith("smallcnn-") else "")  # (the zoo's: CIFAR-10 only)
    return write_entries(out, entries, dataset, settings.norm)


def _defense_note(name: str) -> str:
    """The model_info footnote's sentence on an IGDefense model: the method, or the ablation control."""
    if name == "random-mask":
        return ("Ablation control, not the method: IG-Defense's two passes (Kulkarni & Weng, ECCV 2024) "
                "with a random mask in place of the IG ranking, randomized.")
    return "Test-time defense: IG-Defense (Kulkarni & Weng, ECCV 2024), randomized."


def _fresh(args) -> None:
    """``--fresh``: move what ``--out`` holds into a backup folder (one process under torchrun; the
    others wait), so that the run starts over and loses nothing."""
    from .distributed import shard

    if not getattr(args, "fresh", False):
        return
    rank, world = shard()
    if rank == 0:
        backup = start_fresh(args.out)
        if backup is not None:
            print(f"--fresh: kept what {args.out} held in {backup}", file=sys.stderr)
    if world > 1:
        torch.distributed.barrier()


def sweep_rankings_path(out: Path, name: str) -> Path:
    """Where a sweep folder keeps the rankings it computed, by their name in the sweep ("layer features.16")."""
    return out / ("rankings-" + re.sub(r"[^\w.-]+", "_", name.replace(" ", "-")) + ".safetensors")


def cmd_sweep(args) -> int:
    rank, device, spec, data_spec, model, loader, data = _test_run(args)
    out = Path(args.out)
    with folder_lock(out):
        _fresh(args)
        return _sweep(args, spec.name, data_spec, model, loader, data, out, rank)


def _sweep(args, name: str, data_spec: DataSpec, model: nn.Module, loader, data, out: Path, rank: int) -> int:
    from .distributed import shard
    from .eval.sweep import adversarial_probe, one_at_a_time, sweep

    plan = _plan(args, args.attacks or ",".join(SWEEP_ATTACKS), cascade=True)
    settings = plan.settings
    probe_setting = DefenseSpec(probe_per_class=args.probe_per_class)
    rankings = {"clean": probe_setting.rankings_for(model, name, data_spec)}

    def probe():
        train = data_spec.open("train")
        return balanced_loader(train, batch_size=200, per_class=args.probe_per_class), train.description

    def saved(name: str, compute) -> Rankings:  # computed once per sweep folder (by one process under torchrun)
        path = sweep_rankings_path(out, name)
        # what made them: a folder's rankings of another model, probe or eps are refused, not reused
        made_by = short_digest({"model": model_digest(model), "probe": data_spec.open("train").identity(),
                                "probe_per_class": args.probe_per_class, "eps": args.eps, "name": name})
        if rank == 0 and not path.exists():
            computed = compute()
            computed.made_by = made_by
            computed.save(path)
        if shard()[1] > 1:
            torch.distributed.barrier()
        loaded = Rankings.load(path)
        if loaded.made_by != made_by:
            raise StateMismatch(f"{path} holds rankings {name!r} of another sweep (another model, probe or eps); {FIX}")
        return loaded

    if args.adversarial_rankings:
        def adversarial():
            loader_, source = probe()
            return lo_ir(model, adversarial_probe(model, loader_, settings), class_names=rankings["clean"].class_names,
                         probe=f"PGD-10 (eps {args.eps:.4g}) examples of {source}, first {args.probe_per_class} "
                               "per class")
        rankings["adversarial"] = saved("adversarial", adversarial)
    if args.deep_layer:
        def deeper():
            loader_, source = probe()
            return lo_ir(model, loader_, layer=args.deep_layer, class_names=rankings["clean"].class_names,
                         probe=f"{source}, first {args.probe_per_class} per class")
        rankings[f"layer {args.deep_layer}"] = saved(f"layer {args.deep_layer}", deeper)
    grid = one_at_a_time(tuple(rankings), shares=args.shares, sigmas=args.sigmas, n_samples=args.n_samples)
    meta = {"model": name, "images": len(data), "data": f"{data.description}, class-balanced",
            "rankings": {k: r.probe for k, r in rankings.items()},
            "run": {"command": "igdefense " + " ".join(sys.argv[1:])}}
    result = sweep(model, rankings, loader, out=out, grid=grid, plan=plan, random_control=not args.no_random_control,
                   screen=not args.no_screen, seed=args.seed, meta=meta)
    if rank > 0:
        return 0
    print(result.table())
    best = result.best()
    if best is not None:  # the tuned setting, one file: igdefense eval --setting, igdefense.wrap(model, file)
        chosen = result.settings[best["setting"]]
        path = sweep_rankings_path(out, chosen.rankings)
        if not path.exists():
            rankings[chosen.rankings].save(path)
        DefenseSpec(k=chosen.k_for(rankings[chosen.rankings]), sigma=chosen.sigma, n_samples=chosen.n_samples,
                    rankings=str(path), probe_per_class=args.probe_per_class,
                    origin=f"best image-wise worst case of igdefense sweep in {out}").save(out / "defense.json")
        print(f"best setting: {out / 'defense.json'} (igdefense eval --setting {out / 'defense.json'}; "
              "igdefense.wrap(model, that file))")
    print(f"wrote {out / 'sweep.md'}, sweep.json and sweep.png")
    return 0


def cmd_train(args) -> int:
    from .train import TrainConfig, train

    logging.getLogger("igdefense").setLevel(logging.INFO)  # a line per epoch / round (main's handler prints it)
    data = _data_spec(args).cifar10("train", "train")
    cfg = TrainConfig(robust=args.robust, epochs=args.epochs, seed=args.seed, arch=args.arch, per_class=args.per_class,
                      attack=args.attack, precision=args.precision)
    train(cfg, args.output, data.source, fresh=args.fresh, progress=not args.quiet)
    print(f"wrote {args.output}")
    return 0


def cmd_refine(args) -> int:
    from safetensors.torch import save_file

    from .data import balanced_indices
    from .refine import RefineConfig, refine
    from .distributed import is_main_process

    logging.getLogger("igdefense").setLevel(logging.INFO)  # a line per epoch / round (main's handler prints it)
    data = _data_spec(args).cifar10("train", "refine")
    if args.per_class:
        data.indices = balanced_indices(data.labels, per_class=args.per_class)
    model = zoo.load(args.base).to(default_device())
    reference = None if args.reference.lower() == "none" else zoo.load(args.reference).to(default_device())
    options = {f.name: getattr(args, f.name) for f in dataclasses.fields(RefineConfig)
               if getattr(args, f.name) is not None}  # every field has its --option
    refine(model, data, reference=reference, out_dir=args.out, progress=not args.quiet, fresh=args.fresh, **options)
    if is_main_process():
        path = Path(args.out) / "refined.safetensors"
        with atomic_path(path) as tmp:
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp),
                      metadata={"base": args.base, "reference": args.reference})
        print(f"wrote {path}; per-round log: {Path(args.out) / 'log.jsonl'}")
    return 0


def cmd_explain_robustness(args) -> int:
    from .explain import MAP_METHODS
    from .explain import explain
    from .explain.report import check_study_folder, plot_grid, write_study_report
    from .explain.robustness import explanation_robustness

    check_study_folder(args.out)  # (before the study's minutes, and again under the folder's lock)
    torch.manual_seed(args.seed)
    methods = tuple(m for m in args.methods.split(",") if m)
    for m in methods:
        if m not in MAP_METHODS:
            raise ValueError(f"unknown method {m!r}; choose from {MAP_METHODS}")
    attacks = tuple(a for a in args.attacks.split(",") if a)
    spec, data_spec = _model_spec(args), _data_spec(args)
    model, name = spec.load().to(default_device()), spec.name
    if args.defense:
        model, setting, _ = _defended(args, model, spec.name, data_spec, args.seed)
        name += f" + IG-Defense (LO-IR, {setting.describe(model)})"
    loader, data = data_spec.loader("test", args.images, batch_size=args.images)
    check_classes(model, data)
    x, y = next(iter(loader))
    options = {"num_samples": args.num_samples}
    study, perturbed = explanation_robustness(model, x, y, eps=args.eps, attacks=attacks, methods=methods, q=args.q,
                                              seed=args.seed, progress=not args.quiet,
                                              sensitivity_samples=args.sensitivity, **options)
    out = Path(args.out)
    meta = {"model": name, "images": len(x), "data": f"{data.description}, class-balanced", "eps": args.eps,
            "attacks": list(attacks), "methods": list(methods), "q": args.q, "lime_samples": args.num_samples,
            "sensitivity_samples": args.sensitivity, "seed": args.seed}
    rows = torch.linspace(0, len(x) - 1, min(6, len(x))).round().long()
    with folder_lock(out, "explanation study"):
        check_study_folder(out)
        # An earlier run's report and figures go first: none of them may sit beside this run's, nor a report
        # beside figures a kill left half made (the report is written last).
        for stale in [*out.glob("grid-*.png"), out / "report.json", out / "report.md"]:
            stale.unlink(missing_ok=True)
        for attack in attacks:
            maps = {m: (explain(model, x[rows], method=m, seed=args.seed, **options),
                        explain(model, perturbed[attack][rows], method=m, seed=args.seed, **options)) for m in methods}
            plot_grid(x[rows], perturbed[attack][rows], maps, out / f"grid-{attack}.png",
                      title=f"{name}, {attack} eps {args.eps:.3g}", labels=[data.classes[int(c)] for c in y[rows]])
        report = write_study_report(out, study, meta)  # last: a report means its figures are there
    print(report.read_text())
    print(f"wrote {report}, report.json and grid-<attack>.png in {out}")
    return 0


def _corruption_names(text: str) -> tuple[str, ...]:
    from .corruptions import MAIN, NAMES, check_name

    if text in ("all", "main"):
        return NAMES if text == "all" else MAIN
    return tuple(check_name(n) for n in text.split(",") if n)


def cmd_corruptions(args) -> int:
    from .corruptions import write_dataset
    from .data import balanced_indices

    names = _corruption_names(args.names)
    data = _data_spec(args).cifar10(args.split, "corruptions")
    if args.per_class is not None:
        data.indices = balanced_indices(data.labels, per_class=args.per_class)
    source = f"CIFAR-10 ({data.kind}) {args.split}" + (f", first {args.per_class} per class" if args.per_class else "")
    with folder_lock(args.out):
        _fresh(args)
        out = write_dataset(args.out, data, names=names, seed=args.seed, progress=not args.quiet, source=source)
    print(f"CIFAR-10-C-style (CIFAR parameters, seed {args.seed}): {len(names)} corruptions x 5 severities "
          f"of {len(data)} images in {out}")
    return 0


def cmd_export(args) -> int:
    from .export import OnnxDefense, check_parity, to_onnx
    from .export.onnx import made_from

    data = _data_spec(args)
    if args.check:
        session = OnnxDefense(args.check)
        cfg = session.config
        if not cfg:
            raise ValueError(f"{args.check} has no igdefense metadata; pass --model and --rankings")
        spec, rankings = _export_sources(args, session.metadata)
        model = spec.load()
        setting = DefenseSpec(k=cfg.get("k"), sigma=cfg.get("sigma", SIGMA), tau=cfg.get("tau", TAU),
                              n_samples=cfg.get("n_samples", 1), rankings=rankings,
                              probe_per_class=args.probe_per_class or DefenseSpec.probe_per_class)
        defended = setting.build(model, setting.rankings_for(model, spec.name, data), seed=args.seed)
        if cfg.get("made_from") not in (None, made_from(defended)):  # (older exports record none)
            raise ValueError(f"{args.check} was made from other weights or rankings than {spec.name} and the rankings "
                             "its metadata (or your options) name: pass --model and --rankings of the model it was "
                             "exported from")
        report = check_parity(session, defended, data.loader("test", args.n)[0], seed=args.seed)
        for key, value in report.items():
            print(f"{key:22} {value}")
        if report["noise"] == "input":
            ok = report["max_abs_logit_diff"] <= 1e-4 and report["argmax_disagreements"] == 0
        else:
            ok = report["within_noise"]  # (the noise differs: a fixed gap, 0.005, failed on one image in 200)
        print("parity: " + ("OK" if ok else "FAILED"))
        return 0 if ok else 1
    if not args.output:
        print("igdefense: export needs -o model.onnx (or --check model.onnx)", file=sys.stderr)
        return 2
    spec = _model_spec(args)
    defended, setting, _ = _defended(args, spec.load(), spec.name, data, None)
    options = {k: v for k, v in spec.to_json().items() if k != "name"}
    meta = {"zoo_model": spec.name, "rankings": str(Path(setting.rankings).resolve()) if setting.rankings else "zoo",
            "model_options": json.dumps(options)}
    to_onnx(defended, args.output, opset=args.opset, noise=args.noise, metadata=meta)
    print(f"wrote {args.output} ({args.noise} noise, {setting.describe(defended)}, opset {args.opset})")
    return 0


def _export_sources(args, meta: dict[str, str]) -> tuple[ModelSpec, str | None]:
    """The model and rankings of ``export --check``: what the user typed, and only where they typed
    nothing, what the file's metadata says, read as data. A model *file* named there is never run:
    that takes the user's own --model."""
    rankings = args.rankings if args.rankings is not None else \
        (meta.get("rankings") if meta.get("rankings") not in (None, "zoo") else None)
    if args.name:  # (the metadata's model options belong to the exported model, not to this one)
        return _model_spec(args), rankings
    if not meta.get("zoo_model"):
        raise ValueError(f"{args.check} does not name its model; pass --model and --rankings")
    try:
        options = json_loads(meta.get("model_options", "{}"))
        if not isinstance(options, dict):
            raise ValueError("not a JSON object")
    except ValueError as e:
        raise ValueError(f"{args.check} has malformed model_options metadata ({e})") from e
    stored = ModelSpec.from_json({"name": meta["zoo_model"], **{k: v for k, v in options.items() if v is not None}},
                                 where=f"{args.check}'s metadata")
    if stored.runs_code:
        raise ValueError(f"{args.check} names the model {stored.name!r}, a file igdefense would have to run; it never "
                         "runs code named in a file's metadata: pass --model yourself if you trust that file")
    return from_args(ModelSpec, args, stored), rankings


def _model_options(p: argparse.ArgumentParser, default: str | None) -> None:
    add_options(p, ModelSpec, defaults={"name": default})
    p.set_defaults(default_model=default)


def _data_options(p: argparse.ArgumentParser) -> None:
    add_options(p, DataSpec)


def _defense_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--setting", default=None, metavar="FILE", help="a defense setting (a sweep's defense.json); "
                   "default: the model's tuned setting where the zoo has one (smallcnn-refined: sigma 8/255), "
                   "else the paper's; the options below go over it")
    add_options(p, DefenseSpec, only=("k", "sigma", "tau", "n_samples", "rankings", "probe_per_class"))


def _precision(p: argparse.ArgumentParser, what: str, default: str = "auto", note: str = "") -> None:
    p.add_argument("--precision", choices=PRECISIONS, default=default,
                   help=f"{what} in float32 (fp32) or under bfloat16 autocast (bf16); auto: bfloat16 on a GPU and "
                        f"on a CPU with a bfloat16 matrix unit where it is measured faster, else float32 "
                        f"(default {default}){note}")


def _seed(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=natural, default=0, help="seed of the data order, attacks and noise (default 0)")


def _attack_options(p: argparse.ArgumentParser) -> None:
    """The attack radius, EOT draws and scoring draws of ``eval`` and ``sweep``."""
    p.add_argument("--eps", type=radius, default=8 / 255)
    p.add_argument("--eot-iter", type=count, default=20)
    p.add_argument("--draws", type=count, default=AttackSettings.draws, help=DRAWS_HELP)
    _precision(p, "craft the attacks' examples", default=AttackSettings.precision,
               note="; every example is judged in float32")


def _resumable_run_options(p: argparse.ArgumentParser, out: str, out_help: str) -> None:
    """Batch size, seed, data, and the output folder (``--out``, ``--fresh``) of ``eval`` and ``sweep``."""
    _batch_size(p)
    _seed(p)
    _data_options(p)
    p.add_argument("--out", type=pathname, default=out, help=out_help)
    p.add_argument("--fresh", action="store_true", help=FRESH_HELP)


def _batch_size(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch-size", type=count, default=BATCH_SIZE,
                   help=f"images per batch (default {BATCH_SIZE}; large batches are far faster on CPUs)")


BATCH_SIZE = 250
DRAWS_HELP = ("noise draws each example of a randomized defense is classified under; an image counts when right "
              f"in more than half (default {AttackSettings.draws}; 1: one draw, as single-draw evaluations)")
FRESH_HELP = "start over: move what the folder holds into a backup folder inside it"


class _Parser(argparse.ArgumentParser):
    """argparse, but a mistake is one line (its usage block is what --help is for)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="igdefense", description="Interpretability-guided test-time defense.")
    ap.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = ap.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="undefended vs defended on test images: clean, APGD-CE, transfer "
                                    "from the base model, image-wise worst case")
    _model_options(d, zoo.default_model())
    _defense_options(d)
    d.add_argument("--images", "--n", dest="n", type=count, default=200,
                   help="test images, class-balanced (default 200)")
    d.add_argument("--eps", type=radius, default=8 / 255, help="L-inf radius (default 8/255)")
    d.add_argument("--full", action="store_true", help="AutoAttack standard instead of APGD-CE")
    _batch_size(d)
    _seed(d)
    _data_options(d)
    d.set_defaults(func=cmd_demo)

    r = sub.add_parser("rank", help="compute neuron importance rankings for a model")
    _model_options(r, zoo.default_model())
    r.add_argument("--method", default="lo-ir", choices=["lo-ir", "cd-ir"])
    r.add_argument("--clip", default="ViT-B-16", help="open_clip architecture for cd-ir")
    r.add_argument("--pretrained", default="openai", help="CLIP weights: tag (downloads), local path, or 'none'")
    r.add_argument("--mode", default="auto", choices=["auto", "closed", "ablation"])
    r.add_argument("--layer", default=None, help="module name (its output is ranked); default: penultimate")
    r.add_argument("--per-class", type=count, default=None, help="probe images per class (default: all 5,000)")
    _batch_size(r)
    _data_options(r)
    r.add_argument("-o", "--output", required=True, type=pathname)
    r.set_defaults(func=cmd_rank)

    c = sub.add_parser("compare", help="overlap of two rankings' per-class top-k neuron sets")
    c.add_argument("a", type=pathname)
    c.add_argument("b", type=pathname)
    c.add_argument("--k", type=count, default=50)
    c.add_argument("--plot", type=pathname, default=None, help="heat map output (e.g. overlap.png)")
    c.set_defaults(func=cmd_compare)

    v = sub.add_parser("eval", help="base vs defended under several attacks; image-wise worst case; report")
    _model_options(v, zoo.default_model())
    _defense_options(v)
    v.add_argument("--attacks", default="transfer,adaptive,autoattack,apgd-ce-eot,rays",
                   help="comma-separated, from: " + ",".join(ATTACKS) + " (default: the paper's IW-WC set and the "
                   "defense's own adaptive attack)")
    v.add_argument("--corruptions", default="", help="also accuracy under CIFAR-10-C-style corruptions (CIFAR "
                   "parameters, generated per batch): 'all', 'main' (the 15) or comma-separated names")
    v.add_argument("--severities", default="1-5", type=severities, help="e.g. 1-5 (default) or 3,5")
    v.add_argument("--cascade", action="store_true",
                   help="attack only images no earlier attack broke: same IW-WC, far cheaper; columns "
                        "after the first become cumulative")
    # --images, not a bare --n: torchrun's parser would take "--n" as an abbreviation of its own options
    v.add_argument("--images", "--n", dest="n", type=count, default=1000, help="test images, class-balanced")
    _attack_options(v)
    v.add_argument("--random-mask", action="store_true", help="also evaluate a random-k mask (ablation)")
    v.add_argument("--sanity", action="store_true", help="run the sanity checks on the defended model")
    v.add_argument("--sanity-n", type=count, default=100, help="images the sanity checks run on, class-balanced "
                   "(default 100)")
    _resumable_run_options(v, "igdefense-eval", "directory for logs (resumable) and the report")
    v.set_defaults(func=cmd_eval)

    w = sub.add_parser("sweep", help="a grid of IG-Defense settings, each under the image-wise worst case "
                                     "(transfer first, then the adaptive attack, AutoAttack, EOT, RayS); table + "
                                     "plot (resumable)")
    _model_options(w, zoo.default_model())
    w.add_argument("--images", "--n", dest="n", type=count, default=500, help="test images, class-balanced")
    w.add_argument("--shares", type=listof(real(0, 1)), default=[0.02, 0.05, 0.10, 0.25, 0.50],
                   help="shares of the masked layer's neurons kept per class, each setting's k = share x "
                        "neurons, rounded (default 0.02,0.05,0.1,0.25,0.5)")
    w.add_argument("--sigmas", type=listof(radius),
                   default=[2 / 255, 4 / 255, 8 / 255], help="noise std values (default 2/255,4/255,8/255)")
    w.add_argument("--n-samples", type=listof(count), default=[1, 8],
                   help="noise draws (default 1,8)")
    w.add_argument("--adversarial-rankings", action="store_true",
                   help="also LO-IR on the model's PGD-10 examples of the probe images")
    w.add_argument("--deep-layer", default=None, help="also rankings (ablation LO-IR) at this module's output")
    w.add_argument("--no-random-control", action="store_true", help="skip random rankings at the best setting")
    w.add_argument("--no-screen", action="store_true", help="run every attack on every setting, also those "
                   "that the attacks run so far show cannot beat the undefended worst case")
    w.add_argument("--attacks", default=None, help="comma-separated, from: " + ",".join(ATTACKS) + " (default: "
                   + ",".join(SWEEP_ATTACKS) + ")")
    _attack_options(w)
    w.add_argument("--probe-per-class", type=count, default=200)
    _resumable_run_options(w, "igdefense-sweep", "logs (resumable), sweep.{md,json,png}, report.*")
    w.set_defaults(func=cmd_sweep)

    t = sub.add_parser("train", help="train a CIFAR-10 SmallCNN or PreAct ResNet-18 (robust with --robust); "
                                     "--model FILE.safetensors evaluates the result")
    t.add_argument("--robust", action="store_true", help="adversarial training at 8/255 (--attack)")
    t.add_argument("--attack", choices=TRAINING_ATTACKS, default="fgsm-rs", help="the training attack of --robust: "
                   "fgsm-rs (Wong et al. 2020, default) or n-fgsm (de Jorge et al. 2022)")
    _precision(t, "compute the forward and backward passes")
    t.add_argument("--arch", choices=sorted(ARCHITECTURES), default="smallcnn")
    t.add_argument("--epochs", type=count, default=10)
    t.add_argument("--per-class", type=count, default=None, help="train on the first N images of each class")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    _seed(t)
    _data_options(t)
    t.add_argument("-o", "--output", required=True, type=pathname)
    t.add_argument("--fresh", action="store_true",
                   help="start over: the checkpoint OUTPUT.ckpt is kept as .ckpt.bak (.bak2, ... beside earlier ones)")
    t.set_defaults(func=cmd_train)
    x = sub.add_parser("explain-robustness", help="do Grad-CAM / SmoothGrad / LIME maps see an attack? metrics "
                                                  "between clean and adversarial maps vs a noise control, figures")
    _model_options(x, "smallcnn-standard")
    x.add_argument("--defense", action="store_true", help="explain the model wrapped in IG-Defense (LO-IR, the "
                   "model's setting and the options below)")
    x.add_argument("--images", type=count, default=200, help="test images, class-balanced (default 200)")
    x.add_argument("--eps", type=radius, default=0.025, help="L-inf radius (default 0.025, the study's)")
    x.add_argument("--attacks", default="fgsm,bim", help="from the attack registry (default fgsm,bim)")
    x.add_argument("--methods", default="gradcam,smoothgrad,lime")
    x.add_argument("--q", type=real(0, 100), default=20, help="top-q%% pixels for IoU and top-k intersection")
    x.add_argument("--num-samples", type=count, default=1000, help="LIME perturbations per image")
    x.add_argument("--sensitivity", type=natural, default=3, help="noise draws for sensitivity_max (0: skip)")
    _defense_options(x)
    _seed(x)
    x.add_argument("--quiet", action="store_true", help="no progress bar")
    _data_options(x)
    x.add_argument("--out", type=pathname, default="igdefense-explain",
                   help="report.json, report.md, grid-<attack>.png")
    x.set_defaults(func=cmd_explain_robustness)

    c = sub.add_parser("corruptions", help="write CIFAR-10-C-style corruptions (CIFAR parameters) of the test set, "
                                           "in CIFAR-10-C's layout (resumable)")
    c.add_argument("--out", type=pathname, default="cifar10-c", help="folder for <name>.npy and labels.npy")
    c.add_argument("--fresh", action="store_true", help=FRESH_HELP)
    _seed(c)
    c.add_argument("--names", default="all", help="comma-separated corruptions (default all 19)")
    c.add_argument("--split", default="test", choices=["test", "train"])
    c.add_argument("--per-class", type=count, default=None, help="only the first N images of each class (default all)")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    _data_options(c)
    c.set_defaults(func=cmd_corruptions)

    f = sub.add_parser("refine", help="LIME-guided refinement of a zoo model (resumable; runs under torchrun)")
    f.add_argument("--model", dest="base", default="smallcnn-standard", choices=zoo.available(),
                   help="the zoo model refined (default smallcnn-standard)")
    f.add_argument("--reference", default="smallcnn-robust", help="zoo model whose attributions count as right, "
                   "or none (instability only)")
    f.add_argument("--out", type=pathname, default="igdefense-refine",
                   help="checkpoint, log.jsonl and refined.safetensors")
    f.add_argument("--fresh", action="store_true", help=FRESH_HELP)
    f.add_argument("--per-class", type=count, default=None, help="train on the first N images per class (default all)")
    f.add_argument("--rounds", type=count)
    f.add_argument("--method", choices=METHODS)
    f.add_argument("--attribute-per-round", type=natural)
    f.add_argument("--num-samples", type=count)
    f.add_argument("--copies", type=natural)
    f.add_argument("--quantile", type=real(0, 1))
    f.add_argument("--alpha", type=real(0))
    f.add_argument("--lam", type=real(0))
    f.add_argument("--eps", type=radius)
    f.add_argument("--lr", type=real(0))
    f.add_argument("--weight-decay", type=real(0))
    f.add_argument("--batch-size", type=count)
    f.add_argument("--steps-per-round", type=count)
    f.add_argument("--holdout", type=natural)
    f.add_argument("--budget-cpu-seconds", type=real(0))
    f.add_argument("--seed", type=natural)
    f.add_argument("--precision", choices=PRECISIONS, help="the training step and the attributions in fp32, bf16 or "
                   "auto (default: bfloat16 where this device computes it faster); the holdout log in float32")
    f.add_argument("--quiet", action="store_true", help="no progress bars")
    _data_options(f)
    f.set_defaults(func=cmd_refine)
    e = sub.add_parser("export", help="export a defended model to ONNX, or check an export's parity")
    _model_options(e, None)
    _defense_options(e)
    e.add_argument("--noise", choices=["graph", "input"], default="graph")
    e.add_argument("--opset", type=whole(18), default=18, help="ONNX opset (18 or newer: the torch.export-based exporter's)")
    e.add_argument("-o", "--output", type=pathname, default=None)
    e.add_argument("--check", type=pathname, default=None, metavar="MODEL.onnx", help="parity against PyTorch")
    e.add_argument("--n", type=count, default=1000, help="test images for --check (default 1000)")
    _seed(e)
    _data_options(e)
    e.set_defaults(func=cmd_export)
    return ap


# What a user's mistake raises: wrong values (ValueError: RankingsError, StateMismatch, LogError...),
# wrong types, unknown names (KeyError), unreadable or missing paths and failed downloads (OSError:
# URLError, a corrupt image), missing extras (ImportError), a folder another run writes (FolderBusy),
# a diverging refinement (FloatingPointError).
USER_ERRORS = (ValueError, TypeError, KeyError, OSError, ImportError, FolderBusy, FloatingPointError, ExportError)


def _one_line(e: BaseException) -> str:
    from urllib.error import URLError

    if isinstance(e, URLError) or type(e).__module__.split(".")[0] in ("requests", "urllib3", "huggingface_hub"):
        reason = e.reason if isinstance(e, URLError) else type(e).__name__  # (their own texts run to lines)
        return (f"a download failed ({reason}): without internet, put the weights or data where igdefense reads "
                "them offline (README: Data; RobustBench: --model-dir)")
    if isinstance(e, (IsADirectoryError, NotADirectoryError, FileExistsError)) and e.filename:
        where = e.filename2 or e.filename  # (a rename's target)
        what = "is a folder, where a file belongs" if isinstance(e, IsADirectoryError) else \
            "has a file in the way, where a folder belongs"
        return f"{where} {what}: give another path, or move it away"
    text = e.args[0] if isinstance(e, KeyError) and e.args else str(e)  # (str(KeyError) adds quotes)
    text = " ".join(str(text).split()) or type(e).__name__
    if isinstance(e, OSError) and not isinstance(e, FileNotFoundError) and e.filename and str(e.filename) not in text:
        text += f": {e.filename}"
    return text


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(message)s")
    if args.verbose:  # AutoAttack reports each finished attack at DEBUG level
        logging.getLogger("auto-attack").setLevel(logging.DEBUG)
    try:
        return args.func(args)
    except USER_ERRORS as e:  # bad input, not a bug: one line (-v: the traceback)
        if args.verbose:
            raise
        print(f"igdefense: {_one_line(e)} (igdefense -v ... shows the traceback)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: every job writes atomically and resumes from what it wrote
        if args.verbose:
            raise
        print("igdefense: interrupted; rerun the same command (a resumable job goes on from what it wrote)",
              file=sys.stderr)
        return 130
    finally:
        # Under torchrun: a process that exits with its gloo group alive can abort ("terminate
        # called without an active exception") while the others still work, failing the run.
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
