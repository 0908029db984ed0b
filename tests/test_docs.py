"""The documentation site: it builds with ``mkdocs build --strict`` (a broken link, a missing page or a
docstring that contradicts its signature fails it), every public name of its API pages has a
docstring, every how-to guide runs as written, and the leaderboard page works in a real browser."""

import importlib
import importlib.util
import inspect
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from igdefense.eval.leaderboard import leaderboard_rows

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    run = subprocess.run([str(BIN / "mkdocs"), "build", "--strict", "-q", "-d", str(out)], cwd=ROOT,
                         capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert run.returncode == 0, run.stdout + run.stderr
    return out


def test_the_site_builds_strictly_with_every_page_and_the_api_reference(site):
    for page in ("index.html", "leaderboard/index.html", "concepts/ig-defense/index.html",
                 "how-to/own-defense/index.html", "reference/eval/index.html", "results/index.html"):
        assert (site / page).exists(), page
    assert 'id="igdefense.eval.evaluate.evaluate"' in (site / "reference/eval/index.html").read_text()
    assert (site / "results/eval_smallcnn-robust-draws/eps_curve.png").exists()  # (the concept page's figure)


def test_every_public_name_of_the_api_pages_has_a_docstring_and_is_rendered(site):
    pages = {page: re.findall(r"^::: ([\w.]+)", page.read_text(), re.MULTILINE) for page in (DOCS / "reference").glob("*.md")}
    html = "".join((site / "reference" / page.stem / "index.html").read_text() for page in pages)
    missing, unrendered = [], []
    for name in {m for modules in pages.values() for m in modules if importlib.util.find_spec(m.rsplit(".", 1)[0])}:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError:  # (a function named in full: igdefense.eval.evaluate.evaluate)
            continue
        for public in module.__all__:
            obj = getattr(module, public)
            if not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue
            if not obj.__doc__ or obj.__doc__.startswith(f"{public}("):  # (a dataclass's generated one)
                missing.append(f"{name}.{public}")
            if not re.search(rf'id="[\w.]*\.{public}"', html):
                unrendered.append(f"{name}.{public}")
    assert not missing and not unrendered, (missing, unrendered)


def _blocks(page: Path) -> list[tuple[str, str]]:
    return re.findall(r"^```(python|bash)\n(.*?)^```", page.read_text(), re.MULTILINE | re.DOTALL)


@pytest.mark.parametrize("page", sorted(p.name for p in (DOCS / "how-to").glob("*.md")))
def test_a_how_to_guide_runs_as_written(page, tmp_path):
    blocks = _blocks(DOCS / "how-to" / page)
    assert blocks, f"{page} has no code to run"
    if page == "robustbench.md":  # offline, load_model reads the documented layout (here: the architecture's
        from igdefense.robustbench_compat import load_model  # noqa: F401  (own weights, untrained)
        from robustbench.model_zoo.cifar10 import linf

        name = "Addepalli2021Towards_RN18"
        (tmp_path / "models" / "cifar10" / "Linf").mkdir(parents=True)
        torch.save({"state_dict": linf[name]["model"]().state_dict()},
                   tmp_path / "models" / "cifar10" / "Linf" / f"{name}.pt")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "MPLBACKEND": "Agg"}
    python = "\n".join(code for kind, code in blocks if kind == "python")
    if python:
        run = subprocess.run([sys.executable, "-c", python], cwd=tmp_path, capture_output=True, text=True, env=env)
        assert run.returncode == 0, run.stderr[-3000:]
    for kind, code in blocks:
        if kind == "bash" and not code.startswith("pip install"):  # (installing is the reader's step)
            run = subprocess.run(["bash", "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env)
            assert run.returncode == 0, run.stderr[-3000:]


def _browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")
    if not (chromium and driver) and os.environ.get("IGDEFENSE_NO_BROWSER"):  # (.ci/run could not install it)
        pytest.skip("no Chromium could be installed on this machine (IGDEFENSE_NO_BROWSER)")
    assert chromium and driver, "the leaderboard's browser test needs Chromium: apt-get install chromium chromium-driver"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1600,1000",
                 f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=options)


def test_the_leaderboard_renders_every_entry_and_sorts_in_a_real_browser(site, tmp_path):
    from selenium.webdriver.common.by import By

    rows = leaderboard_rows(sorted(p.parent for p in (ROOT / "benchmarks" / "results").glob("eval_*/report.json")))
    browser = _browser(tmp_path)
    try:
        browser.get((site / "leaderboard" / "index.html").as_uri())
        table = browser.find_element(By.CSS_SELECTOR, "article table")
        headers = [th.text for th in table.find_elements(By.CSS_SELECTOR, "thead th")]
        assert headers[:2] == ["Model", "Defense"] and "Worst, majority" in headers
        body = table.find_elements(By.CSS_SELECTOR, "tbody tr")
        assert len(body) == len(rows) > 0  # every committed entry
        column = headers.index("Worst, majority")

        def numbers():
            cells = [r.find_elements(By.TAG_NAME, "td")[column].text for r in table.find_elements(By.CSS_SELECTOR,
                                                                                                    "tbody tr")]
            return [float(c.split()[0]) for c in cells if c != "—"], cells

        browser.save_screenshot(str(tmp_path / "leaderboard.png"))
        header = table.find_elements(By.CSS_SELECTOR, "thead th")[column]
        header.click()
        values, cells = numbers()
        assert values == sorted(values, reverse=True) and cells[-1] == "—"  # (no number: last)
        header.click()
        values, cells = numbers()
        assert values == sorted(values) and cells[-1] == "—"
        if os.environ.get("IGDEFENSE_SCREENSHOTS"):  # (to look at: IGDEFENSE_SCREENSHOTS=DIR)
            shutil.copy(tmp_path / "leaderboard.png", os.environ["IGDEFENSE_SCREENSHOTS"])
            browser.get((site / "concepts" / "ig-defense" / "index.html").as_uri())
            browser.save_screenshot(str(Path(os.environ["IGDEFENSE_SCREENSHOTS"]) / "concept.png"))
    finally:
        browser.quit()
