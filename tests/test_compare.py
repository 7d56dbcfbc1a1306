"""segexp.compare's table helpers and argument errors (the end-to-end run is in test_sweep)."""

import pytest

from segexp.compare import main, render


def test_render_formats_agree_on_the_cells():
    header, rows = ["rank", "run"], [["1", "a|b"], ["2", "c"]]
    assert render(header, rows, "csv").splitlines() == ["rank,run", "1,a|b", "2,c"]
    assert "| 1 | a\\|b |" in render(header, rows, "markdown")
    assert render(header, rows, "text").splitlines()[1].split() == ["1", "a|b"]


def test_unknown_selection_and_missing_experiment_are_one_line_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        main(["runs=abc"])
    with pytest.raises(SystemExit, match="experiment=nope does not exist"):
        main(["experiment=nope", "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"])
