"""Every reader of a file igdefense finds on disk, fed mutated copies of real files (a seeded fuzzer,
a few hundred cases in seconds): each outcome is the file read or one ValueError-family refusal,
never another exception. A refusal is what the command line turns into one line and exit 2."""

import json
import random
import shutil
from pathlib import Path

import pytest
import torch

from igdefense import zoo
from igdefense.eval import AttackSettings, evaluate

REPO = Path(__file__).resolve().parent.parent
CASES = 60  # mutations per reader


def mutations(data: bytes, seed: int):
    """Mutated copies of ``data``: flipped, cut, inserted, deleted or duplicated bytes and lines."""
    rng = random.Random(seed)
    for _ in range(CASES):
        out = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            kind = rng.randrange(6)
            i = rng.randrange(max(len(out), 1))
            if kind == 0 and out:
                out[i] ^= 1 << rng.randrange(8)
            elif kind == 1:
                out = out[:i]
            elif kind == 2:
                out[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
            elif kind == 3:
                del out[i:i + rng.randint(1, 16)]
            elif kind == 4:
                lines = bytes(out).split(b"\n")
                j = rng.randrange(len(lines))
                lines.insert(rng.randrange(len(lines) + 1), lines[j])
                out = bytearray(b"\n".join(lines))
            else:
                out[i:i] = rng.choice([b"NaN", b"-1", b'"x"', b"[" * 50, b"{}", b"null", b"1e999"])
        yield bytes(out)


def survives(read, path: Path, data: bytes, seed: int) -> int:
    """Feed ``read(path)`` every mutation of ``data``; the number refused (the rest read)."""
    refused = 0
    for case, mutated in enumerate(mutations(data, seed)):
        path.write_bytes(mutated)
        try:
            read(path)
        except ValueError:
            refused += 1
        except Exception as e:  # noqa: BLE001 - the property: nothing but ValueError escapes
            pytest.fail(f"case {case}: {type(e).__name__}: {e}")
    return refused


@pytest.fixture(scope="module")
def real_log(tmp_path_factory):
    from igdefense.data import cifar10_loader

    x, y = next(iter(cifar10_loader("test", per_class=1, batch_size=10)))
    log = tmp_path_factory.mktemp("log") / "run.jsonl"
    evaluate(zoo.load("smallcnn-robust"), [(x[:5], y[:5]), (x[5:], y[5:])], attacks=["fgsm"],
             settings=AttackSettings(), log_path=log, progress=False)
    return log


def test_the_log_reader(real_log, tmp_path):
    from igdefense.eval.log import read_records

    assert survives(lambda p: read_records(p), tmp_path / "run.jsonl", real_log.read_bytes(), 1) > 0


def test_the_rankings_reader(tmp_path):
    from igdefense.rankings import Rankings

    data = (zoo.WEIGHTS_DIR / "smallcnn-robust.lo-ir.safetensors").read_bytes()
    assert survives(Rankings.load, tmp_path / "r.safetensors", data, 2) > 0


def test_the_setting_reader(tmp_path):
    from igdefense.specs import DefenseSpec

    data = (zoo.WEIGHTS_DIR / "smallcnn-refined.defense.json").read_bytes()
    assert survives(DefenseSpec.load, tmp_path / "defense.json", data, 3) > 0


def test_the_state_and_weights_readers(tmp_path):
    from igdefense._state import load_state, save_state
    from igdefense.zoo.weights_file import load_weights

    save_state(tmp_path / "s.safetensors", {"candidates": [torch.rand(2, 3, 4, 4)], "round": 3, "config": {"a": 1}})
    assert survives(load_state, tmp_path / "m.safetensors", (tmp_path / "s.safetensors").read_bytes(), 4) > 0
    data = (zoo.WEIGHTS_DIR / "smallcnn-robust.safetensors").read_bytes()
    assert survives(load_weights, tmp_path / "w.safetensors", data, 5) > 0


def test_the_export_metadata_reader(tmp_path):
    from igdefense.export.runtime import _config

    config = json.dumps({"noise": "graph", "k": 13, "sigma": 4 / 255, "tau": 0.01, "n_samples": 1,
                         "site": "fc:input", "input_shape": [3, 32, 32], "input_range": [0, 1]}).encode()
    survives(lambda p: _config(p.read_text(errors="replace"), p), tmp_path / "meta.json", config, 6)


def test_the_refine_log_reader(tmp_path):
    from igdefense.refine.loop import _log_lines

    lines = "\n".join(json.dumps({"round": r, "holdout_clean": 0.5, "steps": 2}) for r in (1, 2, 3)) + "\n"
    survives(lambda p: _log_lines(p.parent), tmp_path / "log.jsonl", lines.encode(), 7)


def test_the_corruptions_reader(tmp_path):
    from igdefense.cli import main

    out = tmp_path / "c"
    assert main(["corruptions", "--names", "brightness", "--per-class", "1", "--quiet", "--out", str(out)]) == 0
    for name in ("meta.json", "labels.npy"):
        original = (out / name).read_bytes()
        for case, mutated in enumerate(mutations(original, 8)):
            if case >= 10:  # (each case rewrites what a bad file makes it rewrite: a few are enough)
                break
            (out / name).write_bytes(mutated)
            try:
                code = main(["corruptions", "--names", "brightness", "--per-class", "1", "--quiet", "--out", str(out)])
            except Exception as e:  # noqa: BLE001
                pytest.fail(f"{name} case {case}: {type(e).__name__}: {e}")
            assert code in (0, 2)
            (out / name).write_bytes(original)
        shutil.rmtree(out / "backup", ignore_errors=True)
