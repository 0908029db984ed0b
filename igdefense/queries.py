"""Forward-only queries for the black-box attacks (RayS, Square), answered by onnxruntime on CPUs.

Black-box attacks spend their time in forward passes over small batches of changing size, where
PyTorch on CPUs is slow (a one-off RayS comparison on a busy machine: 11x faster through
onnxruntime for the defended SmallCNN; benchmarks/queries.py measures it). The graph is the same function: an IGDefense is exported with its noise as
an input, and that noise comes from the model's own seeded generator, as in its PyTorch forward.
Every adversarial example is re-classified by the PyTorch model afterwards, so no result rests on
onnxruntime.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .defense import IGDefense

log = logging.getLogger(__name__)

Query = Callable[[torch.Tensor], torch.Tensor]


def query_function(model: nn.Module, example: torch.Tensor) -> Query:
    """A function images -> logits equal to ``model`` (no gradients), run by onnxruntime when the
    model is on the CPU and exports; otherwise ``model`` itself."""
    if example.device.type != "cpu":
        return model  # GPUs: PyTorch is fast there, and the data stays on the device
    try:
        from .export.runtime import OnnxDefense

        with tempfile.TemporaryDirectory(prefix="igdefense-queries-") as tmp:
            path = Path(tmp) / "model.onnx"
            _export(model, example[:2], path)
            # The graph is held in memory. Threads as PyTorch's: torchrun's processes get 1 each.
            session = OnnxDefense(path, providers=["CPUExecutionProvider"], threads=torch.get_num_threads())
    except Exception as e:  # noqa: BLE001 - any export failure: answer the queries with PyTorch
        log.warning("black-box queries run in PyTorch (onnxruntime unavailable or export failed: %s)", e)
        return model
    if isinstance(model, IGDefense):
        return lambda x: session(x.float(), model.draw_noise(x))
    return lambda x: session(x.float())


def _export(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    if isinstance(model, IGDefense):
        from .export.onnx import to_onnx

        to_onnx(model, path, noise="input")
        return
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(path), input_names=["images"], output_names=["logits"],
                          dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17,
                          dynamo=False)
