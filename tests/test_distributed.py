"""torchrun shards an evaluation across processes (gloo on CPU) and gets the single-process results."""

import contextlib
import io
import json
import shutil
import subprocess
import sys

import pytest


def torchrun(procs: int) -> list[str]:
    # --standalone: torchrun takes a free port itself (a port picked here could be taken before it binds it)
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"]


@pytest.fixture(scope="module")
def rankings_file(standard_cnn, tmp_path_factory):
    """LO-IR rankings of the standard SmallCNN from 20 training images per class."""
    import igdefense
    from igdefense.data import cifar10_loader

    path = tmp_path_factory.mktemp("rankings") / "r.safetensors"
    igdefense.lo_ir(standard_cnn, cifar10_loader("train", per_class=20, batch_size=100), progress=False).save(path)
    return path


def _cli(args: list[str], procs: int) -> str:
    """What `igdefense ARGS` prints: in this process (the reference), or under torchrun in ``procs``."""
    if procs == 1:
        from igdefense.cli import main

        with contextlib.redirect_stdout(io.StringIO()) as out:
            assert main(args) == 0
        return out.getvalue()
    cmd = [*torchrun(procs), "-m", "igdefense.cli", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _eval(out, rankings, procs: int):
    # FGSM through the defense's noise and PGD from a random start, scored over 3 draws: every source of
    # randomness a shard must reproduce (the budgets of the reported attacks add nothing to that)
    args = ["eval", "--model", "smallcnn-standard", "--rankings", str(rankings), "--images", "20", "--batch-size", "5",
            "--attacks", "fgsm,pgd", "--draws", "3", "--out", str(out)]
    _cli(args, procs)
    return json.loads((out / "report.json").read_text())["per_image"]


@pytest.fixture(scope="module")
def sharded(rankings_file, tmp_path_factory):
    """An evaluation sharded over two processes: (its folder, its per-image results)."""
    out = tmp_path_factory.mktemp("sharded")
    return out, _eval(out, rankings_file, 2)


def test_two_processes_match_one(rankings_file, sharded, tmp_path):
    single = _eval(tmp_path / "one", rankings_file, 1)
    assert single == sharded[1]
    assert len(single["lo-ir"]["clean"]) == 20
    assert (sharded[0] / "lo-ir.jsonl.rank1").exists()  # each process kept its own resumable log


def test_a_sharded_run_resumes_in_one_process(rankings_file, sharded, tmp_path):
    folder, expected = sharded
    shutil.copytree(folder, tmp_path / "run")
    (tmp_path / "run" / "report.json").unlink()
    logs = sorted(p.name for p in (tmp_path / "run").glob("*.jsonl*"))
    sizes = {p: (tmp_path / "run" / p).stat().st_size for p in logs}
    resumed = _eval(tmp_path / "run", rankings_file, 1)  # finds every batch in the rank logs
    assert resumed == expected
    assert all((tmp_path / "run" / p).stat().st_size == sizes[p] for p in logs if ".rank" in p)
    assert not list((tmp_path / "run").glob("*.jsonl"))  # nothing redone: no single-process log was begun


def _sweep(out, procs: int):
    args = ["sweep", "--model", "smallcnn-robust", "--images", "10", "--batch-size", "5", "--shares", "0.1",
            "--sigmas", "4/255", "--n-samples", "1", "--attacks", "transfer,fgsm", "--adversarial-rankings",
            "--probe-per-class", "2", "--draws", "3", "--out", str(out)]
    printed = _cli(args, procs)
    rows = json.loads((out / "sweep.json").read_text())["rows"]
    return printed, [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def test_a_sweep_under_torchrun_matches_one_process(tmp_path):
    _, single = _sweep(tmp_path / "one", 1)
    printed, sharded = _sweep(tmp_path / "two", 2)
    assert sharded == single
    assert {r["setting"] for r in sharded} >= {"k=10% sigma=4/255 n=1 clean", "k=10% sigma=4/255 n=1 adversarial"}
    assert printed.count("| undefended |") == 1  # one process prints the table
    assert (tmp_path / "two" / "undefended.jsonl.rank1").exists()  # the batches were shared out


def test_report_reads_a_run_resumed_under_torchrun(rankings_file, tmp_path):
    # 10 images in one process, then on to 20 under torchrun: the report reads both processes' logs
    # beside the single-process one (it once read base.jsonl alone: 10 images, called finished)
    from igdefense.eval.runs import summarise

    def args(n: int) -> list[str]:
        return ["eval", "--model", "smallcnn-standard", "--rankings", str(rankings_file), "--images", str(n),
                "--order", "round-robin", "--batch-size", "5", "--attacks", "fgsm", "--draws", "3",
                "--out", str(tmp_path / "run")]

    _cli(args(10), 1)
    _cli(args(20), 2)
    assert (tmp_path / "run" / "lo-ir.jsonl").exists() and (tmp_path / "run" / "lo-ir.jsonl.rank1").exists()
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    summary = summarise(tmp_path / "run")["models"]["lo-ir"]
    assert summary["images"] == 20 and summary["finished"]
    iw_wc = next(s for s in report["summary"] if s["model"] == "lo-ir")["iw_wc"]
    assert summary["majority"]["worst_case"] == round(iw_wc, 2)
