"""The site's build hooks: the leaderboard page and the committed evaluation reports it links to are
made from benchmarks/results at build time (never a stale copy), and the Results page gets the table
of every committed measurement, with its command, machine and date."""

from __future__ import annotations

import json
from pathlib import Path

from mkdocs.structure.files import File

from igdefense.eval.leaderboard import leaderboard_page, leaderboard_rows

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def on_files(files, config):
    evals = sorted(p.parent for p in RESULTS.glob("eval_*/report.json"))
    rows = leaderboard_rows(evals, link=lambda f: f"results/{f.name}/report.md")
    page = "---\nhide:\n  - navigation\n  - toc\n---\n\n" + leaderboard_page(rows) + "\n<div data-sortable-tables></div>\n"
    files.append(File.generated(config, "leaderboard.md", content=page))
    for path in sorted(RESULTS.glob("*.png")):  # (the results page's figures)
        files.append(File.generated(config, f"results/{path.name}", abs_src_path=str(path)))
    for folder in evals:
        for path in sorted(folder.glob("*.md")) + sorted(folder.glob("*.png")):
            files.append(File.generated(config, f"results/{folder.name}/{path.name}", abs_src_path=str(path)))
    return files


def on_page_markdown(markdown, page, config, files):
    if page.file.src_uri != "results.md":
        return markdown
    lines = ["", "## Every committed measurement", "",
             "Each file of `benchmarks/results/` that records its command, with the machine it ran on.", "",
             "| Result | Command | Machine | Date |", "|---|---|---|---|"]
    for path in sorted(RESULTS.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except ValueError:
            continue
        if not isinstance(data, dict) or "command" not in data:
            continue
        m = data.get("machine") or {}
        machine = f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores" + (f", {m['gpu']}" if m.get("gpu") else "") \
            if isinstance(m, dict) else str(m)
        command = str(data["command"]).replace("|", "\\|")
        lines.append(f"| `{path.name}` | `{command}` | {machine} | {str(data.get('date', ''))[:10]} |")
    return markdown + "\n".join(lines) + "\n"
