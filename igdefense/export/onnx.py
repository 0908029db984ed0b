"""IGDefense -> one ONNX graph.

``noise="graph"`` draws the pass-1 noise inside the graph (RandomNormalLike), so the exported
model is as randomized as the PyTorch one. ``noise="input"`` makes the noise a second input
(images, then noise of shape (n_samples, B, C, H, W)), for deterministic deployment and exact
parity tests against ``IGDefense.forward(x, noise=...)``. The top-k mask matrix is a constant.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from ..atomic import atomic_path
from .._hooks import module_modes, restore_modes
from .._identity import model_digest, short_digest
from ..defense import IGDefense


class ExportError(RuntimeError):
    """The model cannot be exported to ONNX (the message names the operator when known)."""


class _GraphNoise(nn.Module):
    def __init__(self, defended: IGDefense):
        super().__init__()
        self.defended = defended

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.defended
        noise = torch.randn_like(x.unsqueeze(0).expand(d.n_samples, *x.shape)) * d.sigma
        return d.defend(x, noise, shared_backbone=d._shares(x.device))


class _InputNoise(nn.Module):
    def __init__(self, defended: IGDefense):
        super().__init__()
        self.defended = defended

    def forward(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.defended.defend(x, noise, shared_backbone=self.defended._shares(x.device))


def made_from(defended: IGDefense) -> str:
    """A digest of the weights and rankings an export is made from (on any device): ``export --check``
    rebuilds the model its metadata names and refuses one that is not them."""
    return short_digest({"model": model_digest(defended.model), "rankings": defended.rankings_digest})


def to_onnx(defended: IGDefense, path: str | os.PathLike, *, opset: int = 18, dynamic_batch: bool = True,
            noise: Literal["graph", "input"] = "graph", input_shape: tuple[int, ...] | None = None,
            metadata: dict[str, str] | None = None) -> Path:
    """Export ``defended`` to ``path`` with the ``torch.export``-based exporter and validate it (onnx
    checker + strict shape inference); one file, weights inside.

    The graph takes the path the defense takes at large batches on its device: two passes for a
    defense on a CPU, the shared backbone on a GPU or with ``shared_backbone=True`` (the faster graph
    on onnxruntime's CUDA provider).

    Args:
        defended: the defended model (exported in eval mode).
        opset: ONNX opset version (18 or newer: the exporter's own).
        dynamic_batch: batch dimension symbolic ("batch") instead of fixed.
        noise: "graph" (RandomNormalLike inside the graph) or "input" (second input "noise").
        input_shape: (C, H, W) of one image; default: the shape the rankings were made with.
        metadata: extra key/value strings stored in the model's metadata_props.
    Returns:
        the path written (atomically).
    """
    import onnx

    if noise not in ("graph", "input"):
        raise ValueError(f"noise must be 'graph' or 'input', got {noise!r}")
    if not isinstance(defended, IGDefense):
        raise TypeError(f"to_onnx exports an IGDefense, got {type(defended).__name__}")
    shape = tuple(input_shape or defended.input_shape)
    modes = module_modes(defended)
    module: nn.Module = (_GraphNoise if noise == "graph" else _InputNoise)(defended).eval()
    x = torch.rand(2, *shape, device=defended.class_masks.device)
    args = (x,) if noise == "graph" else (x, torch.zeros(defended.n_samples, *x.shape, device=x.device))
    names = ["images"] if noise == "graph" else ["images", "noise"]
    batch = torch.export.Dim("batch", min=1)
    dims = (({0: batch},) if noise == "graph" else ({0: batch}, {1: batch})) if dynamic_batch else None
    path = Path(path)
    try:
        with torch.no_grad(), warnings.catch_warnings(), defended.computing_in(torch.float32):  # (ONNX: float32)
            # both inputs' batch axes are one symbol, named once: the exporter warns about the second
            warnings.filterwarnings("ignore", message="# The axis name: batch will not be used")
            program = torch.onnx.export(module, args, input_names=names, output_names=["logits"],
                                        dynamic_shapes=dims, opset_version=opset,
                                        dynamo=True, external_data=False, verbose=False)
        model = program.model_proto
        onnx.checker.check_model(model)
        onnx.shape_inference.infer_shapes(model, strict_mode=True)
    except torch.onnx.errors.OnnxExporterError as e:
        raise ExportError(f"cannot export to ONNX opset {opset}: {_reason(e)}. Replace that operation in the "
                          "model, or try another opset.") from e
    except onnx.checker.ValidationError as e:
        raise ExportError(f"the exported graph is invalid: {e}") from e
    finally:
        restore_modes(modes)
    meta = {"igdefense": json.dumps({"noise": noise, "k": defended.k, "sigma": defended.sigma, "tau": defended.tau,
                                     "n_samples": defended.n_samples, "site": str(defended.split.site),
                                     "input_shape": list(shape),
                                     "input_range": list(defended.input_range) if defended.input_range else None,
                                     "made_from": made_from(defended)}),
            **(metadata or {})}
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)
    with atomic_path(path) as tmp:
        onnx.save(model, str(tmp))
    return path


def _reason(error: Exception) -> str:
    """The exporter's reason in one line (its messages run to pages: the graph, a stack trace)."""
    text = str(error)
    op = re.search(r"target=([\w.]+)", text)
    if op:
        return f"the operation {op.group(1)} has no ONNX translation"
    return next((line.strip() for line in text.splitlines() if line.strip()), type(error).__name__)


def optimize(path: str | os.PathLike, out: str | os.PathLike, *, fp16: bool = False) -> Path:
    """Write onnxruntime's offline-optimised graph of ``path`` to ``out`` (optionally in float16,
    keeping float32 inputs/outputs; fp16 pays off on GPUs, not on CPUs)."""
    import onnx
    import onnxruntime as ort

    out = Path(out)
    with atomic_path(out) as tmp:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        opts.optimized_model_filepath = str(tmp)
        ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        if fp16:
            from onnxruntime.transformers.float16 import convert_float_to_float16

            model = convert_float_to_float16(onnx.load(str(tmp)), keep_io_types=True)
            onnx.save(model, str(tmp))
    return out
