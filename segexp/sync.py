"""`python -m segexp.sync OUTPUT_DIR [OUTPUT_DIR ...]`: send to MLflow what runs could not send
while their tracking store was down or locked (kept in <output dir>/tracking/outbox/), and again
what MLflow refused (kept in <output dir>/tracking/rejected/ with the error).

Safe to run any number of times, also while nothing waits: a record is removed once sent, and
one sent twice is recognized by MLflow (see segexp.tracking.outbox).
"""

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from segexp.cli import start_backend
from segexp.errors import SegexpError
from segexp.inference.pyfunc import log_segmentation_model
from segexp.tracking.outbox import Outbox
from segexp.tracking.run_folder import TRACKING_DIR, RunLink, resume_command
from segexp.tracking.store import check_store


@dataclass(frozen=True)
class Synced:
    """What one sync of a run folder did."""

    sent: int  # records MLflow took
    waiting: int  # records the store could not take now (still in tracking/outbox/)
    refused: int  # records MLflow refused again (in tracking/rejected/, each with its error)
    why: str  # the store's error (waiting) or the first refusal (refused); "" when all went


def sync(output_dir: Path, timeout_s: float) -> Synced:
    """Send the outbox of one run folder, and again what MLflow refused before.

    A run still RUNNING whose training process is gone (killed with SIGKILL, out of memory,
    a lost node) is marked KILLED, as nobody else can; `resume=` makes it RUNNING again.
    """
    output_dir = output_dir.resolve()
    link = RunLink.load(output_dir)
    check_store(link.tracking_uri)
    outbox = Outbox(output_dir, link, log_segmentation_model)
    outbox.retry_rejected()
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
    waiting = len(outbox.pending())
    refused = [p for p in outbox.rejected() if not p.name.endswith("-status.json")]
    why = outbox.last_error or ""
    if refused and not why:
        why = json.loads(refused[0].read_text())["error"][:300]
    held = len(outbox.rejected()) - len(refused)
    return Synced(before - waiting - len(refused) - held, waiting, len(refused), why)


def main(argv: list[str] | None = None) -> int:
    """Sync every folder given; exit 1 if any record is still waiting or refused, or a folder
    is bad."""
    parser = argparse.ArgumentParser(prog="python -m segexp.sync", description=__doc__)
    parser.add_argument("output_dirs", nargs="+", type=Path, help="run output folders")
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for a down or locked store"
    )
    args = parser.parse_args(argv)
    start_backend()  # a model record imports Keras and its backend
    failed = False
    for folder in args.output_dirs:
        try:
            done = sync(folder, args.timeout)
        except SegexpError as err:
            print(f"error: {err}", file=sys.stderr)
            failed = True
            continue
        link = RunLink.load(folder)
        print(f"{folder}: sent {done.sent} record(s) to run {link.run_id} in {link.tracking_uri}")
        tracking = folder / TRACKING_DIR
        if done.waiting:
            print(f"error: {folder}: {done.waiting} record(s) still waiting in "
                  f"{tracking / 'outbox'}: the store cannot take them now ({done.why})",
                  file=sys.stderr)  # fmt: skip
        if done.refused:
            print(f"error: {folder}: MLflow refused {done.refused} record(s), kept in "
                  f"{tracking / 'rejected'} with their errors (first: {done.why})",
                  file=sys.stderr)  # fmt: skip
        failed = failed or done.waiting > 0 or done.refused > 0
    return 1 if failed else 0


def cli() -> None:
    raise SystemExit(main())


if __name__ == "__main__":
    cli()
