"""`python -m segexp.sync OUTPUT_DIR [OUTPUT_DIR ...]`: send to MLflow what runs could not send
while their tracking store was down or locked (kept in <output dir>/tracking/outbox/).

Safe to run any number of times, also while nothing waits: a record is removed once sent, and
one sent twice is recognized by MLflow (see segexp.tracking.outbox).
"""

import argparse
import sys
from pathlib import Path

from segexp.cli import configure_tensorflow_env
from segexp.errors import SegexpError
from segexp.inference.pyfunc import log_segmentation_model
from segexp.tracking.outbox import Outbox
from segexp.tracking.run_folder import RunLink, resume_command
from segexp.tracking.store import check_store


def sync(output_dir: Path, timeout_s: float) -> tuple[int, int]:
    """Send the outbox of one run folder; returns (records sent, records still waiting).

    A run still RUNNING whose training process is gone (killed with SIGKILL, out of memory,
    a lost node) is marked KILLED, as nobody else can; `resume=` makes it RUNNING again.
    """
    output_dir = output_dir.resolve()
    link = RunLink.load(output_dir)
    check_store(link.tracking_uri)
    outbox = Outbox(output_dir, link, log_segmentation_model)
    ending = any(path.name.endswith("-status.json") for path in outbox.pending())
    if (
        link.process_gone()
        and not ending
        and outbox.client.get_run(link.run_id).info.status == "RUNNING"
    ):
        print(
            f"{output_dir}: its training process {link.pid} is gone; marking run "
            f"{link.run_id} KILLED (continue it with: {resume_command(output_dir)})"
        )
        outbox.status("KILLED")
    before = len(outbox.pending())
    outbox.flush_or_wait(timeout_s)
    left = len(outbox.pending())
    return before - left, left


def main(argv: list[str] | None = None) -> int:
    """Sync every folder given; exit 1 if any record is still waiting or a folder is bad."""
    parser = argparse.ArgumentParser(prog="python -m segexp.sync", description=__doc__)
    parser.add_argument("output_dirs", nargs="+", type=Path, help="run output folders")
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for a down or locked store"
    )
    args = parser.parse_args(argv)
    configure_tensorflow_env()  # a model record imports TensorFlow
    failed = False
    for folder in args.output_dirs:
        try:
            sent, left = sync(folder, args.timeout)
        except SegexpError as err:
            print(f"error: {err}", file=sys.stderr)
            failed = True
            continue
        link = RunLink.load(folder)
        print(f"{folder}: sent {sent} record(s) to run {link.run_id} in {link.tracking_uri}"
              + (f"; {left} still waiting" if left else ""))  # fmt: skip
        failed = failed or left > 0
    return 1 if failed else 0


def cli() -> None:
    raise SystemExit(main())


if __name__ == "__main__":
    cli()
