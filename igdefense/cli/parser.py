"""The ``igdefense`` command line's parser: one subcommand per job."""

from __future__ import annotations

import argparse

from .. import zoo
from ..parse import count, listof, natural, pathname, radius, real, severities, whole
from ..attacks import ATTACKS
from ..attribution.methods import METHODS
from ..eval.sweep import GRID, SWEEP_ATTACKS
from ..precision import PRECISIONS
from ..refine import RefineConfig
from ..specs import DefenseSpec
from ..train import TRAINING_ATTACKS, TrainConfig
from ..zoo.models import ARCHITECTURES
from .commands import (cmd_compare, cmd_corruptions, cmd_demo, cmd_eval, cmd_explain_robustness, cmd_export,
                       cmd_leaderboard, cmd_rank, cmd_refine, cmd_report, cmd_sweep, cmd_train)
from .options import (FRESH_HELP, _attack_options, add_config_options, _batch_size, _data_options, _defense_options, _model_options,
                      _resumable_run_options, _seed)


class _Parser(argparse.ArgumentParser):
    """argparse, but a mistake is one line (its usage block is what --help is for)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="igdefense", description="Interpretability-guided test-time defense.")
    ap.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = ap.add_subparsers(dest="command", required=True)
    _demo_command(sub)
    _rank_command(sub)
    _compare_command(sub)
    _eval_command(sub)
    _report_command(sub)
    _leaderboard_command(sub)
    _sweep_command(sub)
    _train_command(sub)
    _explain_robustness_command(sub)
    _corruptions_command(sub)
    _refine_command(sub)
    _export_command(sub)
    return ap


def _demo_command(sub) -> None:
    d = sub.add_parser("demo", help="undefended vs defended on test images: clean, APGD-CE, transfer "
                                    "from the base model, image-wise worst case")
    _model_options(d, zoo.default_model())
    _defense_options(d)
    d.add_argument("--images", "--n", dest="n", type=count, default=200,
                   help="test images, class-balanced (default 200)")
    _attack_options(d, only=("eps",))
    d.add_argument("--full", action="store_true", help="AutoAttack standard instead of APGD-CE")
    _batch_size(d)
    _seed(d)
    _data_options(d, select=True)
    d.set_defaults(func=cmd_demo)


def _rank_command(sub) -> None:
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


def _compare_command(sub) -> None:
    c = sub.add_parser("compare", help="overlap of two rankings' per-class top-k neuron sets")
    c.add_argument("a", type=pathname)
    c.add_argument("b", type=pathname)
    c.add_argument("--k", type=count, default=50)
    c.add_argument("--plot", type=pathname, default=None, help="heat map output (e.g. overlap.png)")
    c.set_defaults(func=cmd_compare)


def _eval_command(sub) -> None:
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
    v.add_argument("--screen", action="store_true",
                   help="with --cascade: stop attacking a defended model once the attacks so far leave it no way to "
                        "beat the base's worst case (the sweep's rule); its worst case is then an upper bound, and a "
                        "rerun without --screen goes on from there")
    v.add_argument("--images", "--n", dest="n", type=count, default=1000, help="test images, class-balanced")
    _attack_options(v)
    v.add_argument("--add-attacks", default="", metavar="ATTACKS", help="then re-attack the images the defended model "
                   "still gets right with these attacks (comma-separated), in cascade: does the gain survive them? "
                   "(the evaluation itself resumes first, with no attack run twice)")
    v.add_argument("--add-seed", type=natural, default=None, help="the added attacks' seed (default --seed + 1: other "
                   "starts and noise draws)")
    v.add_argument("--random-mask", action="store_true", help="also evaluate a random-k mask (ablation)")
    v.add_argument("--sanity", action="store_true", help="run the sanity checks on the defended model")
    v.add_argument("--sanity-n", type=count, default=100, help="images the sanity checks run on, class-balanced "
                   "(default 100)")
    _resumable_run_options(v, "igdefense-eval", "directory for logs (resumable) and the report")
    v.set_defaults(func=cmd_eval)


def _report_command(sub) -> None:
    p = sub.add_parser("report", help="read evaluation folders back: one folder's summary, finished or not (an "
                                      "unfinished cascade's worst case as an upper bound), or the image-wise worst "
                                      "case over runs that differ only in --seed")
    p.add_argument("folders", nargs="+", type=pathname, metavar="DIR", help="igdefense eval --out folders")
    p.add_argument("--baseline", default="base", help="the undefended model's log name (default base)")
    p.add_argument("--json", type=pathname, default=None, metavar="FILE", help="also write the result as JSON")
    p.set_defaults(func=cmd_report)


def _leaderboard_command(sub) -> None:
    p = sub.add_parser("leaderboard", help="a leaderboard page of evaluations as deployed: one row per model, defense "
                                           "and protocol, scored under one draw, the majority and every draw")
    p.add_argument("folders", nargs="+", type=pathname, metavar="DIR", help="igdefense eval --out folders, or "
                   "folders holding them (benchmarks/results)")
    p.add_argument("-o", "--output", type=pathname, default=None, metavar="FILE",
                   help="write the page (Markdown) here; default: print the table")
    p.set_defaults(func=cmd_leaderboard)


def _sweep_command(sub) -> None:
    w = sub.add_parser("sweep", help="a grid of IG-Defense settings, each under the image-wise worst case "
                                     "(transfer first, then the adaptive attack, AutoAttack, EOT, RayS); table + "
                                     "plot (resumable)")
    _model_options(w, zoo.default_model())
    w.add_argument("--images", "--n", dest="n", type=count, default=500, help="test images, class-balanced")
    w.add_argument("--shares", type=listof(real(0, 1)), default=GRID["shares"],
                   help="shares of the masked layer's neurons kept per class, each setting's k = share x neurons, "
                        f"rounded (default {','.join(map(str, GRID['shares']))})")
    w.add_argument("--sigmas", type=listof(radius), default=GRID["sigmas"], help="noise std values (default "
                   + ",".join(f"{255 * s:g}/255" for s in GRID["sigmas"]) + ")")
    w.add_argument("--n-samples", type=listof(count), default=GRID["n_samples"],
                   help=f"noise draws (default {','.join(map(str, GRID['n_samples']))})")
    w.add_argument("--adversarial-rankings", action="store_true",
                   help="also LO-IR on the model's PGD-10 examples of the probe images")
    w.add_argument("--deep-layer", default=None, help="also rankings (ablation LO-IR) at this module's output")
    w.add_argument("--no-random-control", action="store_true", help="skip random rankings at the best setting")
    w.add_argument("--no-screen", action="store_true", help="run every attack on every setting, also those "
                   "that the attacks run so far show cannot beat the undefended worst case")
    w.add_argument("--attacks", default=None, help="comma-separated, from: " + ",".join(ATTACKS) + " (default: "
                   + ",".join(SWEEP_ATTACKS) + ")")
    _attack_options(w)
    w.add_argument("--probe-per-class", type=count, default=DefenseSpec.probe_per_class)
    _resumable_run_options(w, "igdefense-sweep", "logs (resumable), sweep.{md,json,png}, report.*")
    w.set_defaults(func=cmd_sweep)


def _train_command(sub) -> None:
    t = sub.add_parser("train", help="train a CIFAR-10 SmallCNN or PreAct ResNet-18 (robust with --robust); "
                                     "--model FILE.safetensors evaluates the result")
    t.add_argument("--robust", action="store_true", help="adversarial training at 8/255 (--attack); without it, standard "
                   "training")
    add_config_options(t, TrainConfig, only=("attack", "precision", "arch", "epochs", "per_class"),
                       parse={"epochs": count, "per_class": count},
                       choices={"attack": TRAINING_ATTACKS, "arch": sorted(ARCHITECTURES), "precision": PRECISIONS})
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    _seed(t)
    _data_options(t)
    t.add_argument("-o", "--output", required=True, type=pathname)
    t.add_argument("--fresh", action="store_true",
                   help="start over: the checkpoint OUTPUT.ckpt is kept as .ckpt.bak (.bak2, ... beside earlier ones)")
    t.set_defaults(func=cmd_train)


def _explain_robustness_command(sub) -> None:
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
    _data_options(x, select=True)
    x.add_argument("--out", type=pathname, default="igdefense-explain",
                   help="report.json, report.md, grid-<attack>.png")
    x.set_defaults(func=cmd_explain_robustness)


def _corruptions_command(sub) -> None:
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


def _refine_command(sub) -> None:
    f = sub.add_parser("refine", help="LIME-guided refinement of a zoo model (resumable; runs under torchrun)")
    f.add_argument("--model", dest="base", default="smallcnn-standard", choices=zoo.available(),
                   help="the zoo model refined (default smallcnn-standard)")
    f.add_argument("--reference", default="smallcnn-robust", help="zoo model whose attributions count as right, "
                   "or none (instability only)")
    f.add_argument("--out", type=pathname, default="igdefense-refine",
                   help="checkpoint, log.jsonl and refined.safetensors")
    f.add_argument("--fresh", action="store_true", help=FRESH_HELP)
    f.add_argument("--per-class", type=count, default=None, help="train on the first N images per class (default all)")
    add_config_options(f, RefineConfig, choices={"method": METHODS, "precision": PRECISIONS},
                       parse={"rounds": count, "num_samples": count, "quantile": real(0, 1), "eps": radius,
                              "batch_size": count, "steps_per_round": count})
    f.add_argument("--quiet", action="store_true", help="no progress bars")
    _data_options(f)
    f.set_defaults(func=cmd_refine)


def _export_command(sub) -> None:
    e = sub.add_parser("export", help="export a defended model to ONNX, or check an export's parity")
    _model_options(e, None)
    _defense_options(e)
    e.add_argument("--noise", choices=["graph", "input"], default="graph")
    e.add_argument("--opset", type=whole(18), default=18, help="ONNX opset (18 or newer: the torch.export-based exporter's)")
    e.add_argument("-o", "--output", type=pathname, default=None)
    e.add_argument("--check", type=pathname, default=None, metavar="MODEL.onnx", help="parity against PyTorch")
    e.add_argument("--n", type=count, default=1000, help="test images for --check (default 1000)")
    _seed(e)
    _data_options(e, select=True)
    e.set_defaults(func=cmd_export)
