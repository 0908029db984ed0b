"""Run an exported defended model with onnxruntime: CUDA when present, else CPU."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch

from .._validation import check_file, check_images, check_number, json_loads

PREFERRED = ("CUDAExecutionProvider", "CPUExecutionProvider")
METADATA_KEYS = ("igdefense", "zoo_model", "rankings", "model_options")  # what igdefense export writes
_CONFIG_TYPES = {"noise": str, "k": int, "sigma": (int, float), "tau": (int, float), "n_samples": int, "site": str,
                 "input_shape": list, "input_range": (list, type(None)), "made_from": str}


def _config(raw: str, path) -> dict:
    """The defense's settings stored in an export, type-checked (they are data, never code)."""
    try:
        cfg = json_loads(raw)
        if not isinstance(cfg, dict):
            raise ValueError("not a JSON object")
        for key, value in cfg.items():
            if key not in _CONFIG_TYPES or isinstance(value, bool) or not isinstance(value, _CONFIG_TYPES[key]):
                raise ValueError(f"{key}={value!r}")
            if key == "input_range" and value is not None and (
                    len(value) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
                raise ValueError(f"{key}={value!r}")
    except ValueError as e:
        raise ValueError(f"{path} has malformed igdefense metadata ({e})") from e
    return cfg


def choose_providers(available: Sequence[str]) -> list[str]:
    """onnxruntime providers in order of preference among ``available`` (CUDA first, then CPU)."""
    chosen = [p for p in PREFERRED if p in available]
    if not chosen:
        raise RuntimeError(f"onnxruntime offers none of {PREFERRED}; it has {list(available)}")
    return chosen


class OnnxDefense:
    """A defended model exported by :func:`igdefense.export.to_onnx`, run by onnxruntime.

    Args:
        path: the .onnx file.
        providers: "auto" (CUDA if onnxruntime-gpu sees a GPU, else CPU) or a list of provider names.
        batch_size: inputs larger than this are run in chunks.

    ``provider`` tells which execution provider the session actually got. Calling the object with
    numpy arrays returns numpy logits; with torch tensors, torch logits on the images' device. Torch
    tensors are bound in place (onnxruntime's I/O binding): on the CUDA provider, CUDA images and
    logits never pass through the host; images on another device than the provider's are copied to it
    and the logits back.
    """

    def __init__(self, path: str | os.PathLike, providers: str | Sequence[str] = "auto", batch_size: int = 256):
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise ImportError("needs onnxruntime: pip install 'igdefense[onnx]' "
                              "(or 'igdefense[onnx-gpu]' for CUDA)") from e
        check_number("batch_size", batch_size, integer=True, low=1)
        available = ort.get_available_providers()
        if providers == "auto":
            providers = choose_providers(available)
        providers = [providers] if isinstance(providers, str) else list(providers)
        names = [p[0] if isinstance(p, tuple) else p for p in providers]  # (a provider may come with its options)
        if missing := [name for name in names if name not in available]:
            # (onnxruntime would fall back to the CPU with a warning: a CUDA run would quietly be a CPU run)
            raise ValueError(f"onnxruntime here has no {missing[0]}; it has {available} "
                             f"(CUDA: pip install 'igdefense[onnx-gpu]'), or pass providers='auto'")
        check_file(path, "an .onnx file written by igdefense export")
        try:
            self.session = ort.InferenceSession(str(path), providers=providers)
        except Exception as e:  # onnxruntime's own InvalidProtobuf, Fail, ...: not subclasses of one Python error
            raise ValueError(f"{path} is not an ONNX model onnxruntime can load: {str(e).splitlines()[0]}") from e
        self.provider = self.session.get_providers()[0]
        self.batch_size = batch_size
        self.input_names = [i.name for i in self.session.get_inputs()]
        meta = self.session.get_modelmeta().custom_metadata_map
        if "igdefense" not in meta:  # (a plain model's export would run here as if it were defended)
            raise ValueError(f"{path} is not an igdefense export: it has no igdefense metadata (the defense's "
                             "settings); export the defended model with `igdefense export` or igdefense.export.to_onnx")
        self.metadata = {k: v for k, v in meta.items() if k in METADATA_KEYS}  # the only keys igdefense reads
        self.config = _config(meta.get("igdefense", "{}"), path)

    @property
    def takes_noise(self) -> bool:
        return "noise" in self.input_names

    def __call__(self, images, noise=None):
        as_torch = isinstance(images, torch.Tensor)
        x = images if as_torch else _numpy(images)
        if x.ndim != 4 or x.dtype != (torch.float32 if as_torch else np.float32):
            raise ValueError(f"images must be float32 (B, C, H, W), got {x.dtype} {tuple(x.shape)}")
        shape = self.config.get("input_shape")
        if shape and list(x.shape[1:]) != shape:
            raise ValueError(f"images have shape {tuple(x.shape)}, but this model takes "
                             f"(B, {', '.join(map(str, shape))})")
        value_range = self.config.get("input_range", [0.0, 1.0])  # (exports before it was stored: the default)
        check_images(x if as_torch else torch.from_numpy(x), tuple(value_range) if value_range else None)
        if self.takes_noise and noise is None:
            raise ValueError("this model was exported with noise='input': pass noise of shape (n_samples, B, C, H, W)")
        if not self.takes_noise and noise is not None:
            raise ValueError("this model draws its noise in the graph (noise='graph'); do not pass noise")
        if as_torch:
            return self._run_bound(x, noise)
        n = _numpy(noise) if noise is not None else None
        outs = []
        for s in range(0, len(x), self.batch_size):
            feed = {"images": x[s:s + self.batch_size]}
            if n is not None:
                feed["noise"] = n[:, s:s + self.batch_size]
            outs.append(self.session.run(["logits"], feed)[0])
        return np.concatenate(outs) if outs else np.zeros((0, self.session.get_outputs()[0].shape[-1]), np.float32)

    @property
    def device(self) -> torch.device:
        """Where the session's inputs and outputs live: the CUDA provider's GPU, else the CPU."""
        if self.provider == "CUDAExecutionProvider":
            return torch.device("cuda", int(self.session.get_provider_options()[self.provider].get("device_id", 0)))
        return torch.device("cpu")

    def _run_bound(self, images: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        device = self.device
        x = images.detach().to(device).contiguous()
        n = torch.as_tensor(noise).detach().to(device, torch.float32).contiguous() if noise is not None else None
        classes = self.session.get_outputs()[0].shape[-1]
        logits = torch.empty(len(x), classes, dtype=torch.float32, device=device)
        chunks = [{"images": x[s:s + self.batch_size], "logits": logits[s:s + self.batch_size]}
                  | ({"noise": n[:, s:s + self.batch_size].contiguous()} if n is not None else {})
                  for s in range(0, len(x), self.batch_size)]
        if device.type == "cuda":  # onnxruntime runs on its own stream: every input must be written first
            torch.cuda.current_stream(device).synchronize()
        for feeds in chunks:
            binding = self.session.io_binding()
            for name, t in feeds.items():
                bind = binding.bind_output if name == "logits" else binding.bind_input
                bind(name, device.type, device.index or 0, np.float32, tuple(t.shape), t.data_ptr())
            self.session.run_with_iobinding(binding)
            binding.synchronize_outputs()
        return logits.to(images.device)


def _numpy(a) -> np.ndarray:
    return np.ascontiguousarray(a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else a)
