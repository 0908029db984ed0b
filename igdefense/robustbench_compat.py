"""Make robustbench 1.1.1 importable beside pyautoattack.

robustbench imports AutoAttack under its GitHub name, ``autoattack`` (``from autoattack import
AutoAttack``, ``from autoattack.state import EvaluationState``), but PyPI only has the package as
``pyautoattack``. Registering the alias in ``sys.modules`` is the whole fix for
``robustbench.utils.load_model`` and the model zoo. It is registered only when robustbench is used
through this module (``from igdefense.robustbench_compat import load_model``) or
:func:`install_autoattack_alias` is called (then ``from robustbench.utils import load_model``
works); ``import igdefense`` leaves ``sys.modules`` alone. (robustbench's own ``benchmark`` still calls
AutoAttack with keywords pyautoattack 0.2.0 dropped; use :func:`igdefense.evaluate` instead.)

Offline use: ``load_model(name, dataset, threat_model, model_dir=D)`` reads
``D/<dataset>/<threat_model>/<name>.pt`` (a checkpoint ``{"state_dict": ...}``) and downloads only
when that file is missing.
"""

from __future__ import annotations

import importlib
import sys

_ROBUSTBENCH = {"load_model": "robustbench.utils",
                "normalize_model": "robustbench.model_zoo.architectures.utils_architectures",
                "WideResNet": "robustbench.model_zoo.architectures.wide_resnet"}


def install_autoattack_alias() -> None:
    """Let ``import autoattack`` resolve to pyautoattack unless a real ``autoattack`` exists."""
    if "autoattack" in sys.modules:
        return
    try:
        importlib.import_module("autoattack")
    except ImportError:
        import pyautoattack
        import pyautoattack.state

        sys.modules["autoattack"] = pyautoattack
        sys.modules["autoattack.state"] = pyautoattack.state



def __getattr__(name: str):
    # robustbench is an optional extra (and slow to import): loaded only when one of its names is asked for
    if name not in _ROBUSTBENCH:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    install_autoattack_alias()
    try:
        return getattr(importlib.import_module(_ROBUSTBENCH[name]), name)
    except ImportError as e:
        raise ImportError("this needs robustbench: pip install 'igdefense[robustbench]'") from e


__all__ = ["load_model", "normalize_model", "WideResNet", "install_autoattack_alias"]
