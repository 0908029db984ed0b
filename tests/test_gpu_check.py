"""The prepared GPU run (benchmarks/gpu_check.py) in its CPU mode: every stage runs and writes its
numbers, a rerun resumes, and the onnxruntime-gpu wheel's parts are checked before they are used."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STAGES = ["forward", "lime", "onnx", "refine", "demo"]  # ("tests" runs tests/test_devices.py, which CI runs itself)


@pytest.fixture(scope="module")
def gpu_check():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return gpu_check


def _run(out: Path, stages: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--cpu", "--out", str(out),
                           "--stages", ",".join(stages), "--carried", str(out.parent / "nothing-carried")],
                          cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_every_stage_in_cpu_mode_then_a_resume(tmp_path):
    out = tmp_path / "gpu_check-cpu.json"
    first = _run(out, STAGES)
    assert first.returncode == 0, first.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["mode"] == "cpu" and result["machine"]["cuda"] in (False, True) and result["command"]
    stages = result["stages"]
    assert list(stages) == STAGES
    assert [row["batch"] for row in stages["forward"]["rows"]] == [1, 4]
    assert all(row[k] > 0 for row in stages["forward"]["rows"] for k in ("default_ratio", "two_passes_ratio",
                                                                          "shared_ratio"))
    assert stages["lime"]["ours_vs_floor"] > 0 and stages["lime"]["speedup_vs_package"] > 0
    assert stages["onnx"]["provider"] == "CPUExecutionProvider" and stages["onnx"]["max_abs_logit_diff"] <= 1e-4
    assert stages["refine"]["step_ms"]["refine"] > 0
    assert stages["demo"]["returncode"] == 0, stages["demo"]["last_lines"]
    again = _run(out, ["forward", "onnx"])
    assert again.returncode == 0 and "forward: done in an earlier run, kept" in again.stdout
    assert json.loads(out.read_text())["stages"]["onnx"] == stages["onnx"]
    skipped = json.loads(out.read_text())  # e.g. a run without onnxruntime-gpu's parts
    skipped["stages"]["onnx"] = {"skipped": "no onnxruntime-gpu parts were carried"}
    out.write_text(json.dumps(skipped))
    assert _run(out, ["onnx"]).returncode == 0  # a skipped stage is done again, not kept
    assert json.loads(out.read_text())["stages"]["onnx"]["provider"] == "CPUExecutionProvider"


def test_the_carried_wheel_parts_are_checked(gpu_check, tmp_path, monkeypatch):
    wheel = tmp_path / "onnxruntime_gpu-0-cp312-cp312-manylinux_2_28_x86_64.whl"
    wheel.write_bytes(os.urandom(3000))
    monkeypatch.setattr(gpu_check, "part_size", lambda: 1024)  # three parts
    gpu_check.pack(tmp_path / "carry", wheel)
    parts = sorted((tmp_path / "carry" / "ort").glob("part-*"))
    assert len(parts) == 3 and b"".join(p.read_bytes() for p in parts) == wheel.read_bytes()
    assert (tmp_path / "carry" / "data" / "cifar10-jpeg.tar.gz").is_file()
    damaged = bytearray(parts[1].read_bytes())
    damaged[-1] ^= 0xFF  # a stale or damaged part: one byte always changes
    parts[1].write_bytes(bytes(damaged))
    assert "do not match their sha256" in gpu_check.install_carried_ort(tmp_path / "carry")
    parts[2].unlink()
    assert gpu_check.install_carried_ort(tmp_path / "carry") == "onnxruntime-gpu parts missing: part-2"
    assert gpu_check.install_carried_ort(tmp_path) == "no onnxruntime-gpu parts were carried"
