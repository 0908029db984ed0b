"""The layers of ARCHITECTURE.md hold: import-linter's contracts (pyproject.toml) pass on the package,
and fail on a copy with one upward import planted."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    # PYTHONPATH first: the copy's igdefense, not the installed one, is the package analysed
    return subprocess.run([sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
                           "sys.exit(lint_imports_command())"],
                          cwd=root, env={"PYTHONPATH": str(root), "PATH": ""}, capture_output=True, text=True)


def test_the_layers_hold_and_an_upward_import_breaks_them(tmp_path):
    run = lint_imports(ROOT)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Contracts: 2 kept, 0 broken." in run.stdout

    shutil.copytree(ROOT / "igdefense", tmp_path / "igdefense", ignore=shutil.ignore_patterns("weights", "__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    registry = tmp_path / "igdefense" / "attacks" / "registry.py"
    registry.write_text(registry.read_text() + "\n\ndef _upward():\n    from ..eval import evaluate  # a job, above\n")
    run = lint_imports(tmp_path)
    assert run.returncode == 1 and "igdefense.attacks.registry -> igdefense.eval" in run.stdout, run.stdout


def test_the_benchmarks_use_only_public_names():
    # what a measurement needs, a user can reach too: no benchmark imports a private module or name
    import re

    private = re.compile(r"^\s*(from igdefense[\w.]*\._\w+ import|from igdefense[\w.]* import .*\b_[a-z]\w*|"
                         r"import igdefense[\w.]*\._)", re.MULTILINE)
    found = {p.name: private.findall(p.read_text()) for p in (ROOT / "benchmarks").glob("*.py")}
    assert not {k: v for k, v in found.items() if v}
