"""What an export records of the model, defense setting and rankings it was made from (ONNX metadata),
and reading that back, as data, for ``export --check``: the specs rebuild the defended model. A model
*file* named there is never loaded (it could run code): that takes the user's own --model."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .._validation import json_loads
from ..specs import DefenseSpec, ModelSpec

SETTING_KEYS = ("k", "sigma", "tau", "n_samples")  # the setting's fields the export's config records


def sources_metadata(model: ModelSpec, setting: DefenseSpec) -> dict[str, str]:
    """The metadata entries naming the export's sources (beside the config :func:`to_onnx` writes)."""
    options = {k: v for k, v in model.to_json().items() if k != "name"}
    return {"zoo_model": model.name, "rankings": str(Path(setting.rankings).resolve()) if setting.rankings else "zoo",
            "model_options": json.dumps(options)}


def stored_model(path: str | os.PathLike, meta: dict[str, str]) -> ModelSpec:
    """The model the export at ``path`` names in its metadata ``meta``; refused in one line when it names
    none, is malformed, or names a model file."""
    if not meta.get("zoo_model"):
        raise ValueError(f"{path} does not name its model; pass --model and --rankings")
    try:
        options = json_loads(meta.get("model_options", "{}"))
        if not isinstance(options, dict):
            raise ValueError("not a JSON object")
    except ValueError as e:
        raise ValueError(f"{path} has malformed model_options metadata ({e})") from e
    stored = ModelSpec.from_json({"name": meta["zoo_model"], **{k: v for k, v in options.items() if v is not None}},
                                 where=f"{path}'s metadata")
    if stored.names_a_file:
        raise ValueError(f"{path} names the model {stored.name!r}, a model file; igdefense never loads one named in "
                         "a file's metadata, and never runs code named in a file's metadata: pass --model yourself "
                         "if you trust that file")
    return stored


def stored_rankings(meta: dict[str, str]) -> str | None:
    """The rankings file the metadata names (None: the zoo's, or none named)."""
    return meta.get("rankings") if meta.get("rankings") not in (None, "zoo") else None


def stored_setting(path: str | os.PathLike, config: dict) -> DefenseSpec:
    """The defense setting the export's config records, its types checked (no rankings: the caller's)."""
    return DefenseSpec.from_json({k: config[k] for k in SETTING_KEYS if k in config}, where=f"{path}'s metadata")
