"""The command line's options: made from the fields of the spec or config they fill (:func:`add_options`,
:func:`from_args`), so that a default lives in one field, and the groups several commands share."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import types
import typing

from ..parse import count, natural, pathname, radius, real
from ..attacks import AttackSettings
from ..precision import PRECISIONS
from ..specs import DataSpec, DefenseSpec, ModelSpec, Spec


def add_options(parser: argparse.ArgumentParser, spec: type[Spec], *, defaults: dict | None = None,
                only: tuple[str, ...] | None = None) -> None:
    """One option per field of ``spec`` (``only``: those fields). Each defaults to None on the command
    line, so that :func:`from_args` tells what was typed from what was not; ``defaults`` only shows in
    the help (the spec's own defaults otherwise)."""
    hints = typing.get_type_hints(spec)
    for f in dataclasses.fields(spec):
        if only is not None and f.name not in only:
            continue
        meta = f.metadata
        kinds = typing.get_args(hints[f.name]) if isinstance(hints[f.name], types.UnionType) else (hints[f.name],)
        parse = meta["parse"] or next(k for k in kinds if k is not type(None))
        default = (defaults or {}).get(f.name, f.default_factory() if f.default_factory is not dataclasses.MISSING
                                       else f.default)
        shown = "" if default in (None, "") else f" (default {_show(default)})"
        parser.add_argument(meta["flag"] or "--" + f.name.replace("_", "-"), dest=f.name, type=parse, default=None,
                            help=meta["help"] + shown)


def add_config_options(parser: argparse.ArgumentParser, config: type, *, parse: dict | None = None,
                       choices: dict | None = None, only: tuple[str, ...] | None = None) -> None:
    """One option per field of the dataclass ``config`` (a job's: ``RefineConfig``), defaulting to None
    so that the field's own default applies; its value type from ``parse`` or the field's type
    (whole numbers >= 0, finite reals >= 0, text), the config checking the rest; its help the field's
    comment in the source (one place for both). ``only``: those fields."""
    hints = typing.get_type_hints(config)
    comments = dict(re.findall(r"^ +(\w+): [^#\n]*# *(.+)$", inspect.getsource(config), re.MULTILINE))
    by_type = {int: natural, float: real(0), str: str}
    for f in dataclasses.fields(config):
        if only is not None and f.name not in only:
            continue
        kind = next(k for k in typing.get_args(hints[f.name]) or (hints[f.name],) if k is not type(None))
        value = _show(f.default) if (parse or {}).get(f.name) is radius else f.default  # (0.8 is no 204/255)
        shown = "" if f.default is None else f" (default {value})"
        parser.add_argument("--" + f.name.replace("_", "-"), type=(parse or {}).get(f.name, by_type[kind]),
                            choices=(choices or {}).get(f.name), default=None,
                            help=comments.get(f.name, "").replace("%", "%%") + shown)


def _show(value) -> str:
    return f"{255 * value:g}/255" if isinstance(value, float) and 0 < value < 1 and (255 * value) % 1 < 1e-9 \
        else str(value)


def from_args(spec: type[Spec], args: argparse.Namespace, base: Spec | None = None, **defaults):
    """The spec the command line names: ``base`` (or ``spec(**defaults)``) with every option that was
    typed put over it."""
    base = base if base is not None else spec(**defaults)
    typed = {f.name: getattr(args, f.name) for f in dataclasses.fields(spec) if getattr(args, f.name, None) is not None}
    return dataclasses.replace(base, **typed)


def _model_options(p: argparse.ArgumentParser, default: str | None) -> None:
    add_options(p, ModelSpec, defaults={"name": default})
    p.set_defaults(default_model=default)


def _data_options(p: argparse.ArgumentParser, select: bool = False) -> None:
    """``--data``, ``--image-size``; with ``select``, how the test images are taken (``--order``,
    ``--offset``): only for the commands whose test images :meth:`DataSpec.loader` takes."""
    add_options(p, DataSpec, only=None if select else ("source", "image_size"))


def _defense_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--setting", default=None, metavar="FILE", help="a defense setting (a sweep's defense.json); "
                   "default: the model's tuned setting where the zoo has one (smallcnn-refined: sigma 8/255), "
                   "else the paper's; the options below go over it")
    add_options(p, DefenseSpec, only=("k", "share", "sigma", "tau", "n_samples", "rankings", "probe_per_class"))


def _seed(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=natural, default=0, help="seed of the data order, attacks and noise (default 0)")


def _attack_options(p: argparse.ArgumentParser, only=("eps", "eot_iter", "draws", "precision")) -> None:
    """The attack options of ``eval`` and ``sweep`` (``demo``: the radius), from :class:`AttackSettings`'
    fields (:func:`from_args` builds the settings)."""
    add_config_options(p, AttackSettings, only=only, parse={"eps": radius, "eot_iter": count, "draws": count},
                       choices={"precision": PRECISIONS})


def _resumable_run_options(p: argparse.ArgumentParser, out: str, out_help: str) -> None:
    """Batch size, seed, data, and the output folder (``--out``, ``--fresh``) of ``eval`` and ``sweep``."""
    _batch_size(p)
    _seed(p)
    _data_options(p, select=True)
    p.add_argument("--out", type=pathname, default=out, help=out_help)
    p.add_argument("--fresh", action="store_true", help=FRESH_HELP)
    p.add_argument("--dry-run", action="store_true", help="print the run's specs (model, data, defense, images, batch "
                   "size, attack settings) as its report records them, as JSON, and stop")


def _batch_size(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch-size", type=count, default=BATCH_SIZE,
                   help=f"images per batch (default {BATCH_SIZE}; large batches are far faster on CPUs)")


BATCH_SIZE = 250


FRESH_HELP = "start over: move what the folder holds into a backup folder inside it"
