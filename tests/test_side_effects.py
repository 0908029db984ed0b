"""Drawing a figure leaves the user's matplotlib backend alone (a notebook's stays inline)."""

import matplotlib

from igdefense.eval.report import plot_eps_curves


def test_plots_do_not_switch_the_backend(tmp_path):
    before = matplotlib.get_backend()
    matplotlib.use("svg")  # a backend none of igdefense's figures would choose
    try:
        path = plot_eps_curves({"base": {2 / 255: 0.5, 8 / 255: 0.2}}, tmp_path / "curve.png", "APGD-CE")
        assert matplotlib.get_backend() == "svg"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # still a PNG, by its name
    finally:
        matplotlib.use(before)
