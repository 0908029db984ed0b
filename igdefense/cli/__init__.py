"""The ``igdefense`` command line: demo, eval, sweep, rank, compare, train, refine, corruptions,
explain-robustness, export. Thin: each command builds specs from its options (:mod:`.options`),
calls one library function and prints (:mod:`.commands`); a user's mistake is one line and exit 2."""

from __future__ import annotations

import logging
import shlex
import sys

import torch

from .._lock import FolderBusy
from ..export.onnx import ExportError
from .resolve import dry_run, specs
from .parser import build_parser

__all__ = ["main", "build_parser", "specs"]


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
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.command_line = shlex.join(["igdefense", *argv])  # (what reports record: this call's, not sys.argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(message)s")
    if args.verbose:  # AutoAttack reports each finished attack at DEBUG level
        logging.getLogger("auto-attack").setLevel(logging.DEBUG)
    try:
        return (dry_run if getattr(args, "dry_run", False) else args.func)(args)
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
