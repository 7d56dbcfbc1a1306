"""The README models table is produced by segexp.model_table."""

import pytest

from segexp.perf.model_table import END, START, measure, replace_block


def test_measure_counts_the_reference_model_and_its_flops():
    params, small = measure("resnet50", 16, size=64)
    assert params == 11_857_236
    _, larger = measure("resnet50", 16, size=128)
    assert 0 < small < larger  # FLOPs grow with the pixel count


def test_replace_block_swaps_only_the_marked_part():
    text = f"before\n{START}\nold\n{END}\nafter\n"
    assert replace_block(text, "new") == f"before\n{START}\nnew\n{END}\nafter\n"
    with pytest.raises(SystemExit):
        replace_block("no markers", "new")


def test_readme_holds_a_generated_table():
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    block = readme.split(START)[1].split(END)[0]
    assert "| `resnet50` | 16 | 11,857,236 |" in block
    assert "`resnet101_dilated` | 8 |" in block
