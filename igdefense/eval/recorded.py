"""What a report records of the run that made it, and reading it back: the model, data and defense
specs, the number of test images, the batch size and the attack settings. Whoever re-attacks a
finished evaluation, or reruns a sweep's cascade with other seeds, rebuilds exactly what it ran
from these, not from its command line.

    run = RecordedRun.read("igdefense-eval")
    model = run.model.load()
    loader, _ = run.data.loader("test", run.n, batch_size=run.batch_size)
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from ..attacks import AttackSettings
from ..specs import DataSpec, DefenseSpec, ModelSpec

_NOT_RECORDED = ("base_model", "cache")  # (the run's own objects, not its settings)


def recorded_command(report: dict) -> str | None:
    """The subcommand (``"eval"``, ``"sweep"``...) of the command line a report records, or None."""
    try:
        line = shlex.split(report["run"]["command"])
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    return next((t for t in line[1:] if not t.startswith("-")), None)


@dataclass(frozen=True)
class RecordedRun:
    """The specs of one ``eval`` or ``sweep`` run (a sweep's ``defense``: its clean rankings' spec;
    its settings are the report's ``grid``)."""

    model: ModelSpec
    data: DataSpec
    defense: DefenseSpec
    n: int  # test images asked for, class-balanced
    batch_size: int
    settings: AttackSettings

    def to_json(self) -> dict:
        settings = {f.name: getattr(self.settings, f.name) for f in dataclasses.fields(AttackSettings)
                    if f.name not in _NOT_RECORDED}
        return {"model": self.model.to_json(), "data": self.data.to_json(), "defense": self.defense.to_json(),
                "n": self.n, "batch_size": self.batch_size,
                "settings": {**settings, "transfer_from": list(settings["transfer_from"])}}

    @classmethod
    def from_json(cls, values: dict, where: str = "the report") -> "RecordedRun":
        keys = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(values, dict) or set(values) != keys:
            raise ValueError(f"{where}: its recorded specs are not the {sorted(keys)} this version records")
        known = {f.name for f in dataclasses.fields(AttackSettings)} - set(_NOT_RECORDED)
        if not isinstance(values["settings"], dict) or (unknown := set(values["settings"]) - known):
            raise ValueError(f"{where}: unknown attack settings {sorted(unknown or ['?'])}")
        for name in ("n", "batch_size"):
            if type(values[name]) is not int or values[name] < 1:
                raise ValueError(f"{where}: {name}={values[name]!r} is not a whole number >= 1")
        return cls(ModelSpec.from_json(values["model"], where), DataSpec.from_json(values["data"], where),
                   DefenseSpec.from_json(values["defense"], where), values["n"], values["batch_size"],
                   AttackSettings(**values["settings"]))

    @classmethod
    def read(cls, folder: str | os.PathLike) -> "RecordedRun":
        """The run an ``igdefense eval`` or ``sweep`` folder's report.json records."""
        path = Path(folder) / "report.json"
        try:
            report = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"cannot read {path}: {e}") from None
        if not isinstance(report, dict) or "specs" not in report:
            raise ValueError(f"{path} records no specs: it is not an igdefense eval or sweep report of this version")
        return cls.from_json(report["specs"], str(path))
