"""Export a whole defended model (noise, pass 1, soft mask, pass 2) to ONNX and run it with onnxruntime."""

from .check import check_parity
from .onnx import ExportError, optimize, to_onnx
from .runtime import OnnxDefense

__all__ = ["to_onnx", "optimize", "OnnxDefense", "ExportError", "check_parity"]
