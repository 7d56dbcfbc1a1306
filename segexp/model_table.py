"""`python -m segexp.model_table [--readme README.md]`: parameters and forward GFLOPs of every
backbone / output stride at 512x512 and 20 classes, as a Markdown table (measured, not typed).

FLOPs come from TensorFlow's profiler on the frozen inference graph (segexp.perf.flops).
With --readme, the table replaces the block between the models-table markers in that file.
"""

import argparse
from pathlib import Path

from segexp.cli import start_backend
from segexp.perf.model_table import replace_block, table


def main() -> None:
    """Print the table; with --readme, also write it into that file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readme", type=Path, help="file whose models-table block to replace")
    args = parser.parse_args()
    start_backend()
    block = table()
    print(block)
    if args.readme:
        args.readme.write_text(replace_block(args.readme.read_text(), block))
        print(f"written into {args.readme}")


if __name__ == "__main__":
    main()
