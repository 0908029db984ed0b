"""An evaluation's JSONL log: a header saying what the results belong to, then one record per finished
step (clean, each attack) of a batch, each holding the batch's results so far.

    {"settings": {...attack settings...}, "identity": {"model": ..., "results_version": 2, ...}}
    {"batch": 0, "digest": "<sha256 of the batch's images and labels>", "clean": [1, 0, ...], "seconds": {...}}

Reading checks everything: a header of another run (model, defense, rankings, attack settings, the
results' version) is refused naming what differs; every record must have known keys, 0/1 lists of
one length, the digest of the images it was computed on, and ``prev``, a digest of the line before
it (the first record's: of the model's identity), so that an edited, reordered or transplanted
record stops the run at its line (nothing follows the last record: the evaluation classifies each
batch's clean images again on resume, which catches an edit of its clean results there). Only a
torn *last* line (what a kill leaves) is dropped, and cut from the file by the process that writes it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Iterable

from ..atomic import atomic_write
from .._identity import FIX, StateMismatch, describe_differences
from .._validation import json_loads

RECORD_META = frozenset({"batch", "seconds", "digest", "draws", "prev"})  # a record's keys that are not steps
BASE_USERS = frozenset({"transfer", "adaptive"})  # attacks whose examples depend on the base model


class LogError(ValueError):
    """A log line that is not a record this version writes (edited, crafted, or another program's)."""


def read_logs(log_path: Path, own: Path, header: dict, steps: Iterable[str], draws: int = 1) -> dict[int, dict]:
    """The furthest record of each batch in the logs of a run with this ``header``: the
    single-process log and every torchrun process's (so a run resumes with any process count)."""
    allowed = frozenset(steps)
    paths = [p for p in sorted({log_path, own, *log_path.parent.glob(f"{log_path.name}.rank*")}) if p.exists()]
    return furthest(r for path in paths
                    for r in read_records(path, allowed, repair=path == own, header=header, draws=draws)[1])


def furthest(records: Iterable[dict]) -> dict[int, dict]:
    """Each batch's furthest record among ``records`` (a batch's records grow step by step)."""
    done: dict[int, dict] = {}
    for record in records:
        if steps_done(record) > steps_done(done.get(record["batch"], {})):
            done[record["batch"]] = record
    return done


def check_header(path: Path, theirs: dict, ours: dict) -> None:
    """Refuse a log of another run; one whose attacks are the first of ours is ours (attacks added since)."""
    if "identity" not in theirs:
        raise StateMismatch(f"{path} was written by igdefense 0.1, which did not record the model, defense and "
                            f"data a log belongs to, so its results cannot be checked: {FIX}")
    order, their_order = ours["settings"].get("order", []), theirs["settings"].get("order")
    if isinstance(their_order, list) and their_order == order[:len(their_order)]:
        theirs = {**theirs, "settings": {**theirs["settings"], "order": order}}
        # what only attacks added since depend on: the transfer source, and what transfer crafts on it
        if "transfer" not in their_order:
            theirs["settings"]["transfer_from"] = ours["settings"].get("transfer_from")
        if not BASE_USERS & set(their_order) and "transfer_base" in ours.get("identity", {}):
            theirs = {**theirs, "identity": {**theirs.get("identity", {}),
                                             "transfer_base": ours["identity"]["transfer_base"]}}
        added = {a: v for a, v in ours.get("identity", {}).get("attack_versions", {}).items() if a not in their_order}
        if added:  # (the versions of the attacks added since are ours)
            identity = theirs.get("identity", {})
            theirs = {**theirs, "identity": {**identity, "attack_versions": {**identity.get("attack_versions", {}),
                                                                             **added}}}
    if isinstance(their_order, list) and "adaptive" in their_order and "transfer" not in their_order \
            and "transfer_base" not in theirs.get("identity", {}) and "transfer_base" in ours.get("identity", {}):
        raise StateMismatch(f"{path} ran the adaptive attack before igdefense recorded the base model its start "
                            f"is crafted on, so its results cannot be checked against this run: {FIX}")
    if theirs != ours:
        # (a header without a precision was crafted in float32: say so where one differs)
        theirs, ours = ({**h, "settings": {"precision": "fp32", **h["settings"]}} for h in (theirs, ours))
        raise StateMismatch(f"{path} holds another run: {describe_differences(theirs, ours)}; {FIX}")


def logged_order(log_path: Path) -> list[str] | None:
    """The attacks the logs of ``log_path`` (and its torchrun processes') ran, in their order; None if none."""
    longest = None
    for path in [log_path, *sorted(log_path.parent.glob(f"{log_path.name}.rank*"))]:
        if path.is_file():
            with open(path) as f:
                try:
                    order = json_loads(f.readline())["settings"]["order"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue  # (read_logs says what is wrong with it)
            if isinstance(order, list) and len(order) > len(longest or []):
                longest = order
    return longest


def read_records(path: Path, steps: Iterable[str] | None = None, repair: bool = False, header: dict | None = None,
                 draws: int | None = None) -> tuple[dict | None, list[dict]]:
    """(header, records) of a log, every record checked (``steps``: the step names allowed; None:
    any), after the log's header is checked against ``header`` when given. A torn last line is
    skipped, and with ``repair`` cut from the file; any other bad line raises :class:`LogError`
    with the file and line number."""
    lines = path.read_text().splitlines()
    if not lines:
        return None, []
    try:
        theirs = json_loads(lines[0])
    except json.JSONDecodeError:
        theirs = None
    if not isinstance(theirs, dict) or not isinstance(theirs.get("settings"), dict):
        raise LogError(f"{path}:1 is not an igdefense evaluation log header; {FIX}")
    if header is not None:
        check_header(path, theirs, header)
    records, expected, chained = [], _genesis(theirs), False
    for number, line in enumerate(lines[1:], start=2):
        try:
            record = json_loads(line)
        except json.JSONDecodeError:
            if number < len(lines):
                raise LogError(f"{path}:{number} is not JSON, and it is not the last line (a kill only tears the "
                               f"last one): the log was edited or damaged; {FIX}") from None
            if repair:
                atomic_write(path, "\n".join(lines[:-1]) + "\n")
            break
        problem = _record_problem(record, None if steps is None else frozenset(steps), draws)
        if not problem and "prev" in record and record["prev"] != expected:
            problem = ("it does not follow the line before it (its digest of that line differs): the log was "
                       "edited, its lines reordered, or they come from another evaluation's log")
        if not problem and chained and "prev" not in record:
            problem = "it carries no digest of the line before it, as every record after a chained one must"
        if problem:
            raise LogError(f"{path}:{number}: {problem}; {FIX}")
        chained, expected = chained or "prev" in record, _link(line)
        records.append(record)
    return theirs, records


def _link(line: str) -> str:
    return hashlib.sha256(line.encode()).hexdigest()[:32]


def _genesis(header: dict) -> str | None:
    """What the first record of a log links to: its model's identity (weights, a defense's settings and
    rankings), which never changes in a log (its attack order may grow; a body moved under another
    model's header does not follow it). Logs written before records were chained hold records without
    a link: their chain starts at the first record that carries one."""
    return _link(json.dumps(header.get("identity", {}).get("model"), sort_keys=True))


def _record_problem(record, steps: frozenset | None, draws: int | None) -> str | None:
    if not isinstance(record, dict):
        return "not a record (a JSON object)"
    batch = record.get("batch")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 0:
        return f"batch {batch!r} is not a batch index"
    names = [k for k in record if k not in RECORD_META]
    unknown = [k for k in names if steps is not None and k not in steps]
    if unknown:
        return f"unknown step(s) {unknown} (this run's steps: {sorted(steps)})"
    lengths = set()
    for k in names:
        v = record[k]
        if not isinstance(v, list) or any(isinstance(b, bool) or b not in (0, 1) for b in v):
            return f"{k!r} is not a list of 0/1 results"
        lengths.add(len(v))
    counts = record.get("draws", {})
    if not isinstance(counts, dict) or (counts and draws == 1):
        return "its draws are not a {step: counts} object of a randomized model's run"
    missing = [k for k in names if "@" not in k and k not in counts]  # (corruptions are classified once)
    if draws is not None and draws > 1 and missing:
        return f"it has no draw counts for {missing}"
    for k, v in counts.items():
        if k not in names or not isinstance(v, list) or len(v) != len(record[k]) or any(
                isinstance(c, bool) or not isinstance(c, int) or not 0 <= c <= (draws or c) for c in v):
            return f"draws of {k!r} are not counts of right draws for its images"
    if len(lengths) > 1:
        return f"its steps have different lengths {sorted(lengths)}"
    if not isinstance(record.get("digest", ""), str) or not isinstance(record.get("prev", ""), str):
        return "its digest is not a string"
    seconds = record.get("seconds", {})
    if not isinstance(seconds, dict) or any(not isinstance(s, (int, float)) or isinstance(s, bool)
                                            or not math.isfinite(s) or s < 0 for s in seconds.values()):
        return "its seconds are not finite numbers of seconds"
    return None


def steps_done(record: dict) -> int:
    return len(record.keys() - RECORD_META)


def append(path: Path, header: dict, record: dict) -> None:
    """Add ``record`` to the log, durably; the header goes first when the log is new (a run that fails
    before its first result leaves no log behind)."""
    if path.is_symlink():  # (written through, a log would land wherever the link points, outside the run)
        raise ValueError(f"{path} is a symbolic link, not a log this run wrote: remove it, or use another "
                         "output folder (--out)")
    new = not path.exists() or not path.stat().st_size  # (empty: killed before its header was written)
    if new:
        path.parent.mkdir(parents=True, exist_ok=True)
    else:
        with open(path) as f:
            first = f.readline()
        if json_loads(first) != header:  # attacks were added: the header names them (checked on reading)
            atomic_write(path, json.dumps(header) + "\n" + path.read_text()[len(first):])
    lines = [] if new else path.read_text().splitlines()
    prev = _link(lines[-1]) if len(lines) > 1 else _genesis(header)  # (each record: a digest of the line before)
    with open(path, "a") as f:
        if new:
            f.write(json.dumps(header) + "\n")
        f.write(json.dumps({**record, "prev": prev}) + "\n")
        f.flush()
        os.fsync(f.fileno())
