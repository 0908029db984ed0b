"""The ``igdefense`` command line: demo, eval, rank, compare, export, train."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import re
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import zoo
from ._atomic import atomic_path
from ._hooks import model_device, model_dtype
from ._identity import FIX, StateMismatch, model_digest, short_digest
from ._lock import FolderBusy, folder_lock, start_fresh
from .attribution.methods import METHODS
from .data import DATA_FORMS, balanced_loader, cache_dir, open_dataset
from .defense import IGDefense
from .eval.attacks import ATTACKS, AttackSettings
from .eval.sweep import SWEEP_ATTACKS
from .models import load_model
from .rankings import Rankings
from .rankings.cache import cached_lo_ir
from .rankings.lo_ir import lo_ir


def _data(args, split: str):
    """The dataset ``--data`` names (``--image-size`` for image folders)."""
    return open_dataset(args.data, split, image_size=args.image_size)


def _test_images(args, n: int, batch_size: int):
    """``n`` class-balanced test images of ``--data``: (loader, its dataset)."""
    data = _data(args, "test")
    return balanced_loader(data, n, batch_size), data


def _rankings_for(args, name: str, model: nn.Module) -> Rankings:
    """Shipped rankings for zoo models that have them; else LO-IR on ``--probe-per-class`` training
    images per class, cached (keyed by the model's weights and the probe images' files and indices)."""
    if name in zoo.with_rankings():
        return zoo.rankings(name)
    data = _data(args, "train")
    outputs = _check_classes(model, data)
    return cached_lo_ir(model, data, args.probe_per_class, name=name, class_names=_class_names(data, outputs))


def _check_classes(model: nn.Module, data) -> int:
    """The model's number of outputs; a clear error when ``--data``'s labels do not fit them (e.g.
    CIFAR-100 for a CIFAR-10 model)."""
    x = data.__getitems__([0])[0]
    with torch.no_grad():
        outputs = model(x.to(model_dtype(model)).to(model_device(model))).shape[-1]
    top = int(np.max(data.labels))
    if top >= outputs:
        raise ValueError(f"{data.description} has labels up to {top}, but the model has {outputs} outputs: "
                         "--data and --model do not belong together")
    return outputs


def _class_names(data, outputs: int) -> list[str] | None:
    """The dataset's class names, when they name the model's outputs one to one."""
    return list(data.classes) if len(data.classes) == outputs else None


def cmd_demo(args) -> int:
    from .eval.evaluate import evaluate
    from .eval.stats import paired_difference

    torch.manual_seed(args.seed)
    model = _model(args)
    loader, data = _test_images(args, args.n, args.batch_size)
    _check_classes(model, data)
    rankings = _rankings_for(args, args.model, model)
    sigma = zoo.demo_sigma(args.model) if args.sigma is None else args.sigma
    defended = IGDefense(model, rankings, k=args.k, sigma=sigma, seed=args.seed).eval()
    attack = "autoattack" if args.full else "apgd-ce"
    # The base model's examples are cached, so the transfer attack (the defended model re-classifying
    # them) costs one forward pass.
    settings = AttackSettings(eps=args.eps, seed=args.seed, cache=cache_dir() / "adversarial", base_model=model,
                              transfer_from=(attack,))
    base = evaluate(model, loader, attacks=[attack], settings=settings, desc="undefended")
    dfd = evaluate(defended, loader, attacks=[attack, "transfer"], settings=settings, desc="IG-defended")
    name = "AutoAttack" if args.full else "APGD-CE"
    print(f"\nmodel {args.model}, {len(data)} class-balanced images of {data.description}, "
          f"L-inf eps {args.eps * 255:g}/255")
    print(f"defense: LO-IR k={defended.k}/{defended.split.num_neurons}, sigma={sigma * 255:g}/255, "
          f"tau={defended.tau}, rankings from {rankings.probe}\n")
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
                        "Stronger adaptive attacks (EOT, BPDA, RayS) and the sanity checks: "
                        "igdefense eval --cascade --sanity.", 100))
    return 0


def cmd_rank(args) -> int:
    model = _model(args)
    data = _data(args, "train")
    outputs = _check_classes(model, data)
    loader = balanced_loader(data, batch_size=args.batch_size, per_class=args.per_class)
    probe = f"{data.description}, " + (f"first {args.per_class} per class" if args.per_class else "all")
    t0 = time.time()
    if args.method == "cd-ir":
        from .rankings.cd_ir import cd_ir

        pretrained = None if args.pretrained.lower() == "none" else args.pretrained
        rankings = cd_ir(model, loader, list(data.classes), clip=args.clip, pretrained=pretrained, layer=args.layer,
                         probe=probe + f", CLIP {args.clip} ({pretrained or 'random init'})")
    else:
        rankings = lo_ir(model, loader, layer=args.layer, mode=args.mode, class_names=_class_names(data, outputs),
                         probe=probe)
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
        plot_jaccard(jac, args.plot, a.class_names, b.class_names, f"top-{args.k}: {a.method} (rows) vs {b.method}")
        print(f"wrote {args.plot}")
    return 0


def cmd_eval(args) -> int:
    from .eval.benchmark import benchmark
    from .eval.distributed import init_distributed
    from .eval.report import markdown_table, summary_rows

    torch.manual_seed(args.seed)
    rank, device = init_distributed()
    base = _model(args).to(device)
    loader, data = _test_images(args, args.n, args.batch_size)
    _check_classes(base, data)
    rankings = Rankings.load(args.rankings) if args.rankings else _rankings_for(args, args.model, base)
    models = {"base": base,
              f"{rankings.method}": IGDefense(base, rankings, k=args.k, sigma=args.sigma, seed=args.seed).eval()}
    if args.random_mask:
        models["random-mask"] = IGDefense(base, rankings.randomized(args.seed), k=args.k, sigma=args.sigma,
                                          seed=args.seed).eval()
    corruptions = _corruption_names(args.corruptions)
    meta = {"model": args.model, "rankings": rankings.probe, "k": models[rankings.method].k, "sigma": args.sigma,
            "images": len(data), "data": f"{data.description}, class-balanced (ordered by class)",
            "run": {"command": "igdefense " + " ".join(sys.argv[1:])}}
    if corruptions:
        meta["corruptions"] = f"CIFAR-10-C-style, CIFAR parameters, seed {args.seed}: {len(corruptions)} x " \
                              f"severities {','.join(map(str, args.severities))}"
    sanity_data = None
    if args.sanity:
        sanity_data = next(iter(_test_images(args, args.sanity_n, args.sanity_n)[0]))
    settings = AttackSettings(eps=args.eps, seed=args.seed, eot_iter=args.eot_iter, draws=args.draws,
                              cache=cache_dir() / "adversarial")
    with folder_lock(args.out):
        _fresh(args)
        results = benchmark(models, loader, out=args.out, attacks=[a for a in args.attacks.split(",") if a],
                            settings=settings, baseline="base", cascade=args.cascade, corruptions=corruptions,
                            severities=args.severities, sanity=[rankings.method] if args.sanity else (),
                            sanity_data=sanity_data, meta=meta)
    if rank > 0:
        return 0
    print(markdown_table(summary_rows(results, "base")))
    for c in results[rankings.method].sanity:
        print(c)
    info = _model_info(args, models, results, data, settings)
    print(f"wrote {Path(args.out) / 'report.md'}, report.json and {len(info)} RobustBench entries "
          f"({info[0].parent})")
    return 0


def _model_info(args, models: dict, results: dict, data, settings: AttackSettings) -> list[Path]:
    """``--out``/model_info/<dataset>/<threat>/<model>_<name>.json: each evaluated model as a RobustBench entry."""
    from .eval.model_info import entry, write_entries

    dataset = {"CIFAR10": "cifar10", "CIFAR100": "cifar100"}.get(type(data).__name__, "")
    base = models["base"]
    architecture = type(getattr(base, "model", base)).__name__  # (inside a Normalized wrapper)
    slug = re.sub(r"[^\w.+-]+", "-", args.model)
    entries = {}
    for name, model in models.items():
        defended = isinstance(model, IGDefense)
        label = args.model if not defended else \
            f"{args.model} + IG-Defense ({name}, k={model.k}, sigma {255 * model.sigma:g}/255)"
        entries[f"{slug}_{name}"] = entry(
            results[name], name=label, architecture=architecture + (" + IG-Defense" if defended else ""),
            dataset=dataset, eps=settings.eps, data=data.description,
            forward_passes=model.n_samples + 1 if defended else 1, defended=defended,
            additional_data=False if args.model.startswith("smallcnn-") else "")  # (the zoo's: CIFAR-10 only)
    return write_entries(args.out, entries, dataset, settings.norm)


def _fresh(args) -> None:
    """``--fresh``: move what ``--out`` holds into a backup folder (one process under torchrun; the
    others wait), so that the run starts over and loses nothing."""
    from .eval.distributed import shard

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
    from .eval.distributed import init_distributed

    torch.manual_seed(args.seed)
    rank, device = init_distributed()
    model = _model(args).to(device)
    loader, data = _test_images(args, args.n, args.batch_size)
    _check_classes(model, data)
    out = Path(args.out)
    with folder_lock(out):
        _fresh(args)
        return _sweep(args, model, loader, data, out, rank)


def _sweep(args, model: nn.Module, loader, data, out: Path, rank: int) -> int:
    from .eval.distributed import shard
    from .eval.sweep import adversarial_probe, one_at_a_time, sweep

    settings = AttackSettings(eps=args.eps, seed=args.seed, eot_iter=args.eot_iter, draws=args.draws,
                              cache=cache_dir() / "adversarial")
    rankings = {"clean": _rankings_for(args, args.model, model)}

    def probe():
        train = _data(args, "train")
        return balanced_loader(train, batch_size=200, per_class=args.probe_per_class), train.description

    def saved(name: str, compute) -> Rankings:  # computed once per sweep folder (by one process under torchrun)
        path = sweep_rankings_path(out, name)
        # what made them: a folder's rankings of another model, probe or eps are refused, not reused
        made_by = short_digest({"model": model_digest(model), "probe": _data(args, "train").identity(),
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
    grid = one_at_a_time(tuple(rankings), ks=[v / 100 for v in args.ks], sigmas=args.sigmas, n_samples=args.n_samples)
    meta = {"model": args.model, "images": len(data), "data": f"{data.description}, class-balanced",
            "rankings": {k: r.probe for k, r in rankings.items()},
            "run": {"command": "igdefense " + " ".join(sys.argv[1:])}}
    attacks = [a for a in args.attacks.split(",") if a] if args.attacks else SWEEP_ATTACKS
    result = sweep(model, rankings, loader, out=out, grid=grid, attacks=attacks, settings=settings,
                   random_control=not args.no_random_control, screen=not args.no_screen, seed=args.seed, meta=meta)
    if rank > 0:
        return 0
    print(result.table())
    print(f"wrote {out / 'sweep.md'}, sweep.json and sweep.png")
    return 0


def cmd_train(args) -> int:
    from .zoo.train import TrainConfig, train

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    train(TrainConfig(robust=args.robust, epochs=args.epochs, seed=args.seed), args.output, args.data,
          fresh=args.fresh)
    print(f"wrote {args.output}")
    return 0


def cmd_refine(args) -> int:
    from safetensors.torch import save_file

    from .data import CIFAR10, balanced_indices
    from .refine import RefineConfig, refine
    from .refine.loop import is_main_process

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    data = CIFAR10("train", args.data)
    if args.per_class:
        data.indices = np.asarray(balanced_indices(data.labels, args.per_class))
    model = zoo.load(args.model)
    reference = None if args.reference.lower() == "none" else zoo.load(args.reference)
    options = {f.name: getattr(args, f.name) for f in dataclasses.fields(RefineConfig)
               if getattr(args, f.name) is not None}  # every field has its --option
    refine(model, data, reference=reference, out_dir=args.out, progress=not args.quiet, fresh=args.fresh, **options)
    if is_main_process():
        path = Path(args.out) / "refined.safetensors"
        with atomic_path(path) as tmp:
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp),
                      metadata={"base": args.model, "reference": args.reference})
        print(f"wrote {path}; per-round log: {Path(args.out) / 'log.jsonl'}")
    return 0


def cmd_explain_robustness(args) -> int:
    from .explain import METHODS as MAP_METHODS
    from .explain import explain
    from .explain.report import plot_grid, write_report
    from .explain.robustness import explanation_robustness

    torch.manual_seed(args.seed)
    methods = tuple(m for m in args.methods.split(",") if m)
    for m in methods:
        if m not in MAP_METHODS:
            raise ValueError(f"unknown method {m!r}; choose from {MAP_METHODS}")
    attacks = tuple(a for a in args.attacks.split(",") if a)
    model = _model(args)
    name = args.model
    if args.defense:
        model = IGDefense(model, _rankings_for(args, args.model, model), seed=args.seed).eval()
        name += " + IG-Defense (LO-IR)"
    loader, data = _test_images(args, args.images, args.images)
    _check_classes(model, data)
    x, y = next(iter(loader))
    options = {"num_samples": args.num_samples}
    study, perturbed = explanation_robustness(model, x, y, eps=args.eps, attacks=attacks, methods=methods, q=args.q,
                                              seed=args.seed, progress=not args.quiet,
                                              sensitivity_samples=args.sensitivity, **options)
    out = Path(args.out)
    meta = {"model": name, "images": len(x), "data": f"{data.description}, class-balanced", "eps": args.eps,
            "attacks": list(attacks), "methods": list(methods), "q": args.q, "lime_samples": args.num_samples,
            "sensitivity_samples": args.sensitivity, "seed": args.seed}
    report = write_report(out, study, meta)
    rows = torch.linspace(0, len(x) - 1, min(6, len(x))).round().long()
    for attack in attacks:
        maps = {m: (explain(model, x[rows], method=m, seed=args.seed, **options),
                    explain(model, perturbed[attack][rows], method=m, seed=args.seed, **options)) for m in methods}
        plot_grid(x[rows], perturbed[attack][rows], maps, out / f"grid-{attack}.png",
                  title=f"{name}, {attack} eps {args.eps:.3g}", labels=[data.classes[int(c)] for c in y[rows]])
    print(report.read_text())
    print(f"wrote {report}, report.json and grid-<attack>.png in {out}")
    return 0


def _severities(text: str) -> tuple[int, ...]:
    """'1-5' or '3,5' -> (1, 2, 3, 4, 5) or (3, 5)."""
    try:
        if "-" in text:
            lo, hi = (int(v) for v in text.split("-"))
            values = tuple(range(lo, hi + 1))
        else:
            values = tuple(int(v) for v in text.split(",") if v)
    except ValueError:
        values = ()
    if not values or any(v not in range(1, 6) for v in values):
        raise argparse.ArgumentTypeError(f"severities: {text!r} is not like 1-5 or 3,5 (values 1..5)")
    return values


def _corruption_names(text: str) -> tuple[str, ...]:
    from .corruptions import MAIN, NAMES, check_name

    if text in ("all", "main"):
        return NAMES if text == "all" else MAIN
    return tuple(check_name(n) for n in text.split(",") if n)


def cmd_corruptions(args) -> int:
    from .corruptions import write_dataset
    from .data import CIFAR10, balanced_indices

    names = _corruption_names(args.names)
    data = CIFAR10(args.split, args.data)
    if args.per_class is not None:
        data.indices = np.asarray(balanced_indices(data.labels, args.per_class))
    source = f"CIFAR-10 ({data.kind}) {args.split}" + (f", first {args.per_class} per class" if args.per_class else "")
    with folder_lock(args.out):
        _fresh(args)
        out = write_dataset(args.out, data, names=names, seed=args.seed, progress=not args.quiet, source=source)
    print(f"CIFAR-10-C-style (CIFAR parameters, seed {args.seed}): {len(names)} corruptions x 5 severities "
          f"of {len(data)} images in {out}")
    return 0


def _defended(args, model_name: str, rankings_path, **kw) -> IGDefense:
    model = _model(args, model_name)
    rankings = (Rankings.load(rankings_path) if rankings_path
                else _rankings_for(args, model_name, model))
    return IGDefense(model, rankings, **kw).eval()


def cmd_export(args) -> int:
    from .export import OnnxDefense, check_parity, to_onnx

    if args.check:
        session = OnnxDefense(args.check)
        cfg = session.config
        if not cfg:
            raise ValueError(f"{args.check} has no igdefense metadata; pass --model and --rankings")
        args = _options_from_export(args, session.metadata)
        defended = _defended(args, args.model, args.rankings, k=cfg.get("k"), sigma=cfg.get("sigma", 4 / 255),
                             tau=cfg.get("tau", 0.01), n_samples=cfg.get("n_samples", 1), seed=args.seed)
        loader = _test_images(args, args.n, 250)[0]
        report = check_parity(session, defended, loader, seed=args.seed)
        for key, value in report.items():
            print(f"{key:22} {value}")
        if report["noise"] == "input":
            ok = report["max_abs_logit_diff"] <= 1e-4 and report["argmax_disagreements"] == 0
        else:
            ok = abs(report["onnx_accuracy"] - report["pytorch_accuracy"]) <= 0.005
        print("parity: " + ("OK" if ok else "FAILED"))
        return 0 if ok else 1
    if not args.output:
        print("igdefense: export needs -o model.onnx (or --check model.onnx)", file=sys.stderr)
        return 2
    model_name = args.model or zoo.default_model()
    defended = _defended(args, model_name, args.rankings, k=args.k, sigma=args.sigma)
    meta = {"zoo_model": model_name, "rankings": str(Path(args.rankings).resolve()) if args.rankings else "zoo",
            "model_options": json.dumps(_model_options(args))}
    to_onnx(defended, args.output, opset=args.opset, noise=args.noise, metadata=meta)
    print(f"wrote {args.output} ({args.noise} noise, k={defended.k}, sigma={defended.sigma:.4g}, opset {args.opset})")
    return 0


_MODEL_OPTIONS = {"model_dir": str, "dataset": str, "threat_model": str, "checkpoint": str, "num_classes": int}


def _options_from_export(args, meta: dict[str, str]) -> argparse.Namespace:
    """The model, rankings and model options of ``export --check``: what the user typed, and only where
    they typed nothing, what the file's metadata says, read as data. A model *file* named there is
    never run: that takes the user's own --model."""
    model = args.model or meta.get("zoo_model")
    if not model:
        raise ValueError(f"{args.check} does not name its model; pass --model and --rankings")
    if not args.model and not (model in zoo.available() or model.startswith(("robustbench:", "torchvision:", "timm:"))):
        raise ValueError(f"{args.check} names the model {model!r}, a file igdefense would have to run; it never runs "
                         "code named in a file's metadata: pass --model yourself if you trust that file")
    values = vars(args) | {"model": model}
    if not args.model:  # the options the export was made with belong to its model
        try:
            options = json.loads(meta.get("model_options", "{}"))
            if not isinstance(options, dict):
                raise ValueError("not a JSON object")
        except ValueError as e:
            raise ValueError(f"{args.check} has malformed model_options metadata ({e})") from e
        for key, value in options.items():
            if key not in _MODEL_OPTIONS:
                raise ValueError(f"{args.check}: unknown model option {key!r} in its metadata")
            if value is not None and (isinstance(value, bool) or not isinstance(value, _MODEL_OPTIONS[key])):
                raise ValueError(f"{args.check}: model option {key}={value!r} in its metadata is not a "
                                 f"{_MODEL_OPTIONS[key].__name__}")
            if values.get(key) is None:  # never over what the user typed
                values[key] = value
    if args.rankings is None and meta.get("rankings") not in (None, "zoo"):
        values["rankings"] = meta["rankings"]
    return argparse.Namespace(**values)


def _model_options(args) -> dict:
    """The options besides --model that rebuild the model (paths made absolute)."""
    resolve = lambda v: None if v is None else str(Path(v).resolve())  # noqa: E731
    return {"model_dir": resolve(args.model_dir), "dataset": args.dataset, "threat_model": args.threat_model,
            "checkpoint": resolve(args.checkpoint), "num_classes": args.num_classes}


def _model(args, spec: str | None = None) -> nn.Module:
    """The model ``--model`` (or ``spec``) names, with the options that go with it."""
    return load_model(spec or args.model, model_dir=args.model_dir, dataset=args.dataset or "cifar10",
                      threat_model=args.threat_model or "Linf", checkpoint=args.checkpoint,
                      num_classes=args.num_classes)


def _add_model_args(p: argparse.ArgumentParser, default: str | None) -> None:
    p.add_argument("--model", default=default, help="a zoo name (" + ", ".join(zoo.available()) + "), "
                   "robustbench:NAME, torchvision:NAME, timm:NAME or path/to/file.py:factory (which runs that "
                   "file: name only files you trust); the model takes [0,1] images (normalisation inside it)"
                   + (f" (default {default})" if default else ""))
    p.add_argument("--model-dir", default=None, help="RobustBench's model folder: <dir>/<dataset>/<threat>/NAME.pt "
                   "is read, downloaded only when missing (default ./models)")
    p.add_argument("--dataset", default=None, choices=["cifar10", "cifar100", "imagenet"],
                   help="the RobustBench model's dataset (default cifar10)")
    p.add_argument("--threat-model", default=None, choices=["Linf", "L2", "corruptions"], help="default Linf")
    p.add_argument("--checkpoint", default=None, help="state dict for torchvision:NAME / timm:NAME (read with "
                   "torch.load(weights_only=True): tensors only, no code)")
    p.add_argument("--num-classes", type=_count, default=None, help="classifier outputs of the checkpoint's model")


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=None, help="the images: " + "; ".join(DATA_FORMS) + " (class-balanced subsets)")
    p.add_argument("--image-size", type=_whole(8), default=224, help="image folders: side of the centre crop, after "
                   "resizing the shorter side to size / 0.875 (default 224)")


def _fraction(text: str) -> float:
    """Parse '8/255' or '0.03' (finite, >= 0)."""
    num, _, den = text.partition("/")
    try:
        value = float(num) / float(den or 1)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number or a fraction like 8/255") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number >= 0")
    return value


def _radius(text: str) -> float:
    """An L-inf radius on [0, 1] images: '8/255' or '0.03', at most 1."""
    value = _fraction(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"{text!r} is more than the whole [0, 1] range of an image; did you mean "
                                         f"{text}/255?")
    return value


def _whole(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{text!r} must be >= {low}")
        return value
    parse.__name__ = "whole number"
    return parse


_count, _natural = _whole(1), _whole(0)  # (>= 1: images, steps, k; >= 0: seeds)


def _real(low: float = -math.inf, high: float = math.inf):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not (math.isfinite(value) and low <= value <= high):
            raise argparse.ArgumentTypeError(f"{text!r} must be a finite number in [{low:g}, {high:g}]")
        return value
    parse.__name__ = "number"
    return parse


DRAWS_HELP = ("noise draws each example of a randomized defense is classified under; an image counts when right "
              f"in more than half (default {AttackSettings.draws}; 1: one draw, as single-draw evaluations)")
FRESH_HELP = "start over: move what the folder holds into a backup folder inside it"


def _list(parse):
    def parse_all(text: str) -> list:
        return [parse(v) for v in text.split(",") if v]
    parse_all.__name__ = "comma-separated list"
    return parse_all


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="igdefense", description="Interpretability-guided test-time defense.")
    ap.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = ap.add_subparsers(dest="command", required=True)
    data_help = "CIFAR-10 location (tar.gz, JPEG tree or torchvision root); default: search, see docs"

    d = sub.add_parser("demo", help="undefended vs defended on test images: clean, APGD-CE, transfer "
                                    "from the base model, image-wise worst case")
    _add_model_args(d, zoo.default_model())
    d.add_argument("--images", "--n", dest="n", type=_count, default=200,
                   help="test images, class-balanced (default 200)")
    d.add_argument("--k", type=_count, default=None, help="neurons kept per class (default: 10%% of them, rounded)")
    d.add_argument("--sigma", type=_fraction, default=None,
                   help="pass-1 noise std (default 4/255; 8/255 for smallcnn-refined, its best in `igdefense sweep`)")
    d.add_argument("--eps", type=_radius, default=8 / 255, help="L-inf radius (default 8/255)")
    d.add_argument("--full", action="store_true", help="AutoAttack standard instead of APGD-CE")
    d.add_argument("--probe-per-class", type=_count, default=200, help="LO-IR probe images per class")
    d.add_argument("--batch-size", type=_count, default=100)
    d.add_argument("--seed", type=_natural, default=0)
    _add_data_args(d)
    d.set_defaults(func=cmd_demo)

    r = sub.add_parser("rank", help="compute neuron importance rankings for a model")
    _add_model_args(r, zoo.default_model())
    r.add_argument("--method", default="lo-ir", choices=["lo-ir", "cd-ir"])
    r.add_argument("--clip", default="ViT-B-16", help="open_clip architecture for cd-ir")
    r.add_argument("--pretrained", default="openai", help="CLIP weights: tag (downloads), local path, or 'none'")
    r.add_argument("--mode", default="auto", choices=["auto", "closed", "ablation"])
    r.add_argument("--layer", default=None, help="module name (its output is ranked); default: penultimate")
    r.add_argument("--per-class", type=_count, default=None, help="probe images per class (default: all 5,000)")
    r.add_argument("--batch-size", type=_count, default=256)
    _add_data_args(r)
    r.add_argument("-o", "--output", required=True, type=Path)
    r.set_defaults(func=cmd_rank)

    c = sub.add_parser("compare", help="overlap of two rankings' per-class top-k neuron sets")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    c.add_argument("--k", type=_count, default=50)
    c.add_argument("--plot", type=Path, default=None, help="heat map output (e.g. overlap.png)")
    c.set_defaults(func=cmd_compare)

    v = sub.add_parser("eval", help="base vs defended under several attacks; image-wise worst case; report")
    _add_model_args(v, zoo.default_model())
    v.add_argument("--rankings", default=None, help="rankings file (default: shipped, or LO-IR on a probe subset)")
    v.add_argument("--attacks", default="transfer,adaptive,autoattack,apgd-ce-eot,rays",
                   help="comma-separated, from: " + ",".join(ATTACKS) + " (default: the paper's IW-WC set and the "
                   "defense's own adaptive attack)")
    v.add_argument("--corruptions", default="", help="also accuracy under CIFAR-10-C-style corruptions (CIFAR "
                   "parameters, generated per batch): 'all', 'main' (the 15) or comma-separated names")
    v.add_argument("--severities", default="1-5", type=_severities, help="e.g. 1-5 (default) or 3,5")
    v.add_argument("--cascade", action="store_true",
                   help="attack only images no earlier attack broke: same IW-WC, far cheaper; columns "
                        "after the first become cumulative")
    # --images, not a bare --n: torchrun's parser would take "--n" as an abbreviation of its own options
    v.add_argument("--images", "--n", dest="n", type=_count, default=1000, help="test images, class-balanced")
    v.add_argument("--k", type=_count, default=None)
    v.add_argument("--sigma", type=_fraction, default=4 / 255)
    v.add_argument("--eps", type=_radius, default=8 / 255)
    v.add_argument("--eot-iter", type=_count, default=20)
    v.add_argument("--draws", type=_count, default=AttackSettings.draws, help=DRAWS_HELP)
    v.add_argument("--random-mask", action="store_true", help="also evaluate a random-k mask (ablation)")
    v.add_argument("--sanity", action="store_true", help="run the sanity checks on the defended model")
    v.add_argument("--sanity-n", type=_count, default=100)
    v.add_argument("--probe-per-class", type=_count, default=200)
    v.add_argument("--batch-size", type=_count, default=250, help="large batches are far faster on CPUs")
    v.add_argument("--seed", type=_natural, default=0)
    _add_data_args(v)
    v.add_argument("--out", default="igdefense-eval", help="directory for logs (resumable) and the report")
    v.add_argument("--fresh", action="store_true", help=FRESH_HELP)
    v.set_defaults(func=cmd_eval)

    w = sub.add_parser("sweep", help="a grid of IG-Defense settings, each under the image-wise worst case "
                                     "(transfer first, then the adaptive attack, AutoAttack, EOT, RayS); table + "
                                     "plot (resumable)")
    _add_model_args(w, zoo.default_model())
    w.add_argument("--images", "--n", dest="n", type=_count, default=500, help="test images, class-balanced")
    w.add_argument("--ks", type=_list(_real(0, 100)), default=[2, 5, 10, 25, 50],
                   help="k values, %% of the masked layer's neurons (default 2,5,10,25,50)")
    w.add_argument("--sigmas", type=_list(_fraction),
                   default=[2 / 255, 4 / 255, 8 / 255], help="noise std values (default 2/255,4/255,8/255)")
    w.add_argument("--n-samples", type=_list(_count), default=[1, 8],
                   help="noise draws (default 1,8)")
    w.add_argument("--adversarial-rankings", action="store_true",
                   help="also LO-IR on the model's PGD-10 examples of the probe images")
    w.add_argument("--deep-layer", default=None, help="also rankings (ablation LO-IR) at this module's output")
    w.add_argument("--no-random-control", action="store_true", help="skip random rankings at the best setting")
    w.add_argument("--no-screen", action="store_true", help="run every attack on every setting, also those "
                   "that the attacks run so far show cannot beat the undefended worst case")
    w.add_argument("--attacks", default=None, help="comma-separated, from: " + ",".join(ATTACKS) + " (default: "
                   ",".join(SWEEP_ATTACKS) + ")")
    w.add_argument("--eps", type=_radius, default=8 / 255)
    w.add_argument("--eot-iter", type=_count, default=20)
    w.add_argument("--draws", type=_count, default=AttackSettings.draws, help=DRAWS_HELP)
    w.add_argument("--probe-per-class", type=_count, default=200)
    w.add_argument("--batch-size", type=_count, default=250)
    w.add_argument("--seed", type=_natural, default=0)
    _add_data_args(w)
    w.add_argument("--out", default="igdefense-sweep", help="logs (resumable), sweep.{md,json,png}, report.*")
    w.add_argument("--fresh", action="store_true", help=FRESH_HELP)
    w.set_defaults(func=cmd_sweep)

    t = sub.add_parser("train", help="train the zoo's CIFAR-10 SmallCNN (robust with --robust)")
    t.add_argument("--robust", action="store_true", help="FGSM-RS adversarial training at 8/255")
    t.add_argument("--epochs", type=_count, default=10)
    t.add_argument("--seed", type=_natural, default=0)
    t.add_argument("--data", default=None, help=data_help)
    t.add_argument("-o", "--output", required=True, type=Path)
    t.add_argument("--fresh", action="store_true", help="start over: the checkpoint OUTPUT.ckpt is kept as .ckpt.bak")
    t.set_defaults(func=cmd_train)
    x = sub.add_parser("explain-robustness", help="do Grad-CAM / SmoothGrad / LIME maps see an attack? metrics "
                                                  "between clean and adversarial maps vs a noise control, figures")
    _add_model_args(x, "smallcnn-standard")
    x.add_argument("--defense", action="store_true", help="explain the model wrapped in IG-Defense (LO-IR)")
    x.add_argument("--images", type=_count, default=200, help="test images, class-balanced (default 200)")
    x.add_argument("--eps", type=_radius, default=0.025, help="L-inf radius (default 0.025, the study's)")
    x.add_argument("--attacks", default="fgsm,bim", help="from the attack registry (default fgsm,bim)")
    x.add_argument("--methods", default="gradcam,smoothgrad,lime")
    x.add_argument("--q", type=_real(0, 100), default=20, help="top-q%% pixels for IoU and top-k intersection")
    x.add_argument("--num-samples", type=_count, default=1000, help="LIME perturbations per image")
    x.add_argument("--sensitivity", type=_natural, default=3, help="noise draws for sensitivity_max (0: skip)")
    x.add_argument("--probe-per-class", type=_count, default=200)
    x.add_argument("--seed", type=_natural, default=0)
    x.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_data_args(x)
    x.add_argument("--out", default="igdefense-explain", help="report.json, report.md, grid-<attack>.png")
    x.set_defaults(func=cmd_explain_robustness)

    c = sub.add_parser("corruptions", help="write CIFAR-10-C-style corruptions (CIFAR parameters) of the test set, "
                                           "in CIFAR-10-C's layout (resumable)")
    c.add_argument("--out", default="cifar10-c", help="folder for <name>.npy and labels.npy")
    c.add_argument("--fresh", action="store_true", help=FRESH_HELP)
    c.add_argument("--seed", type=_natural, default=0)
    c.add_argument("--names", default="all", help="comma-separated corruptions (default all 19)")
    c.add_argument("--split", default="test", choices=["test", "train"])
    c.add_argument("--per-class", type=_count, default=None, help="only the first N images of each class (default all)")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    c.add_argument("--data", default=None, help=data_help)
    c.set_defaults(func=cmd_corruptions)

    f = sub.add_parser("refine", help="LIME-guided refinement of a zoo model (resumable; runs under torchrun)")
    f.add_argument("--model", default="smallcnn-standard", choices=zoo.available())
    f.add_argument("--reference", default="smallcnn-robust", help="zoo model whose attributions count as right, "
                   "or none (instability only)")
    f.add_argument("--out", default="igdefense-refine", help="checkpoint, log.jsonl and refined.safetensors")
    f.add_argument("--fresh", action="store_true", help=FRESH_HELP)
    f.add_argument("--per-class", type=_count, default=None, help="train on the first N images per class (default all)")
    f.add_argument("--rounds", type=_count)
    f.add_argument("--method", choices=METHODS)
    f.add_argument("--attribute-per-round", type=_natural)
    f.add_argument("--num-samples", type=_count)
    f.add_argument("--copies", type=_natural)
    f.add_argument("--quantile", type=_real(0, 1))
    f.add_argument("--alpha", type=_real(0))
    f.add_argument("--lam", type=_real(0))
    f.add_argument("--eps", type=_radius)
    f.add_argument("--lr", type=_real(0))
    f.add_argument("--weight-decay", type=_real(0))
    f.add_argument("--batch-size", type=_count)
    f.add_argument("--steps-per-round", type=_count)
    f.add_argument("--holdout", type=_natural)
    f.add_argument("--budget-cpu-seconds", type=_real(0))
    f.add_argument("--seed", type=_natural)
    f.add_argument("--quiet", action="store_true", help="no progress bars")
    f.add_argument("--data", default=None, help=data_help)
    f.set_defaults(func=cmd_refine)
    e = sub.add_parser("export", help="export a defended model to ONNX, or check an export's parity")
    _add_model_args(e, None)
    e.add_argument("--rankings", default=None, help="rankings file (default: shipped, or LO-IR on a probe subset)")
    e.add_argument("--k", type=_count, default=None)
    e.add_argument("--sigma", type=_fraction, default=4 / 255)
    e.add_argument("--noise", choices=["graph", "input"], default="graph")
    e.add_argument("--opset", type=_whole(7), default=17)
    e.add_argument("--probe-per-class", type=_count, default=200)
    e.add_argument("-o", "--output", type=Path, default=None)
    e.add_argument("--check", type=Path, default=None, metavar="MODEL.onnx", help="parity against PyTorch")
    e.add_argument("--n", type=_count, default=1000, help="test images for --check (default 1000)")
    e.add_argument("--seed", type=_natural, default=0)
    _add_data_args(e)
    e.set_defaults(func=cmd_export)
    return ap


# What a user's mistake raises: wrong values (ValueError: RankingsError, StateMismatch, LogError...),
# wrong types, unknown names (KeyError), unreadable or missing paths and failed downloads (OSError:
# URLError, a corrupt image), missing extras (ImportError), a folder another run writes (FolderBusy),
# a diverging refinement (FloatingPointError).
USER_ERRORS = (ValueError, TypeError, KeyError, OSError, ImportError, FolderBusy, FloatingPointError)


def _one_line(e: BaseException) -> str:
    from urllib.error import URLError

    if isinstance(e, URLError):
        return (f"a download failed ({e.reason}): without internet, put the weights or data where igdefense reads "
                "them offline (README: Data; RobustBench: --model-dir)")
    text = e.args[0] if isinstance(e, KeyError) and e.args else str(e)  # (str(KeyError) adds quotes)
    text = " ".join(str(text).split()) or type(e).__name__
    if isinstance(e, OSError) and not isinstance(e, FileNotFoundError) and e.filename and str(e.filename) not in text:
        text += f": {e.filename}"
    return text


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    if args.verbose:  # AutoAttack reports each finished attack at DEBUG level
        logging.getLogger("auto-attack").setLevel(logging.DEBUG)
    try:
        return args.func(args)
    except USER_ERRORS as e:  # bad input, not a bug: one line (-v: the traceback)
        if args.verbose:
            raise
        print(f"igdefense: {_one_line(e)} (igdefense -v ... shows the traceback)", file=sys.stderr)
        return 2
    finally:
        # Under torchrun: a process that exits with its gloo group alive can abort ("terminate
        # called without an active exception") while the others still work, failing the run.
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
