"""A job's MLflow run from start to end: open it (or reopen it to resume), and end it FINISHED,
KILLED or FAILED once everything it recorded is sent; a sweep job that failed before its run
existed still shows as a FAILED child."""

import dataclasses
import json
import os
import socket
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path

from mlflow.tracking import MlflowClient

from segexp.errors import SegexpError, caused_by_signal
from segexp.tracking.outbox import ModelSender, Outbox
from segexp.tracking.run_folder import RunLink
from segexp.tracking.store import failing_when_locked

RESUMES_TAG = "segexp.resumes"  # how many times the run was continued from its saved state


def open_run(
    uri: str,
    experiment_id: str,
    run_name: str | None,
    tags: Mapping[str, str],
    output_dir: Path,
    parent_run_id: str | None = None,
    send_model: ModelSender | None = None,
) -> Outbox:
    """Create the job's MLflow run (a child of `parent_run_id` in a sweep), note it in the output
    folder (tracking/run.json, what resume and segexp.sync read) and return its outbox, which
    logs model records with `send_model`."""
    from mlflow.tracking.context.registry import resolve_tags

    all_tags = resolve_tags(dict(tags))  # user, source, as mlflow.start_run would add
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    with failing_when_locked(uri):
        created = MlflowClient(uri).create_run(experiment_id, run_name=run_name, tags=all_tags)
    link = RunLink(
        uri, experiment_id, created.info.run_id, os.getpid(), socket.gethostname(),
        created.info.start_time,
    )  # fmt: skip
    link.save(output_dir)
    return Outbox(output_dir, link, send_model)


def reopen_run(output_dir: Path, send_model: ModelSender | None = None) -> Outbox:
    """Mark the run an output folder belongs to RUNNING again (resume) and return its outbox;
    the caller has checked the store."""
    link = RunLink.load(output_dir)
    link = dataclasses.replace(link, pid=os.getpid(), host=socket.gethostname())
    link.save(output_dir)
    client = MlflowClient(link.tracking_uri)
    try:
        resumes = int(client.get_run(link.run_id).data.tags.get(RESUMES_TAG, "0")) + 1
        client.update_run(link.run_id, status="RUNNING")
        client.set_tag(link.run_id, RESUMES_TAG, str(resumes))
    except Exception as err:  # noqa: BLE001
        raise SegexpError(
            f"cannot resume run {link.run_id} in {link.tracking_uri}: {str(err).splitlines()[0]}"
        ) from None
    outbox = Outbox(output_dir, link, send_model)
    outbox.retry_rejected()  # what MLflow refused before: tried again with this run's records
    for stale in outbox.pending():  # an earlier end not yet sent: this process ends the run
        if stale.name.endswith("-status.json"):
            stale.unlink()
    return outbox


def record_failed_job(
    uri: str, experiment: str, parent_run_id: str, run_name: str | None, output_dir: Path,
    error: str,
) -> str | None:  # fmt: skip
    """In a sweep, make sure a job that failed shows as a FAILED child: create one if the job
    failed before opening its run (a bad override, a missing folder). Returns the run id."""
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    mine = client.search_runs(
        [found.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}' "
        f"and tags.`hydra.output_dir` = '{output_dir.resolve()}'",
    )
    if mine:
        return mine[0].info.run_id
    child = client.create_run(
        found.experiment_id,
        run_name=run_name,
        tags={
            "mlflow.parentRunId": parent_run_id,
            "hydra.output_dir": str(output_dir.resolve()),
            "segexp.error": error[:5000],
        },
    )
    client.set_terminated(child.info.run_id, "FAILED")
    return child.info.run_id


def unsent_message(outbox: Outbox, waited_s: float) -> str:
    """What waits in the outbox, why, and how to send it."""
    return (
        f"tracking store {outbox.link.tracking_uri} could not take records for {waited_s:g} s "
        f"({outbox.last_error}): {len(outbox.pending())} record(s) of run {outbox.link.run_id} "
        f"are kept in {outbox.folder}. Send them with: python -m segexp.sync {outbox.output_dir}"
    )


def refused_message(outbox: Outbox) -> str:
    """What MLflow refused, the first reason, and how to send it once the cause is fixed."""
    refused = [p for p in outbox.rejected() if not p.name.endswith("-status.json")]
    first = json.loads(refused[0].read_text()) if refused else {"kind": "?", "error": "?"}
    return (
        f"MLflow refused {len(refused)} record(s) of run {outbox.link.run_id} (first: the "
        f"{first['kind']} record, {first['error'][:300]}); they are kept in "
        f"{outbox.rejected_folder} and the run is marked FAILED until they are sent. Fix the "
        f"cause, then send them with: python -m segexp.sync {outbox.output_dir}"
    )


def _record_status(outbox: Outbox, status: str) -> None:
    """The final status through the outbox; straight to MLflow when the disk takes no file."""
    try:
        outbox.status(status)
    except OSError as err:
        print(f"warning: cannot write the run's end to {outbox.folder}: {err}", file=sys.stderr)
        try:
            outbox.client.set_terminated(outbox.link.run_id, status)
        except Exception as store_err:  # noqa: BLE001
            print(f"warning: cannot end run {outbox.link.run_id}: {store_err}", file=sys.stderr)


def _flush_unless_stopped(outbox: Outbox, wait_s: float) -> bool:
    """Flush the run's last records; a signal meanwhile (e.g. while the model is logged) ends
    the run KILLED at once, and what is unsent stays for segexp.sync or resume."""
    try:
        return outbox.flush_or_wait(wait_s)
    except BaseException as err:
        if caused_by_signal(err):
            with suppress(Exception):  # the store is down: segexp.sync will end it
                outbox.client.set_terminated(outbox.link.run_id, "KILLED")
        raise


@contextmanager
def finishing(outbox: Outbox, timeout_s: float) -> Iterator[None]:
    """End the run with the block: FINISHED, KILLED (a signal) or FAILED (an error), after
    everything recorded is sent. A finished job with records still unsent (the store did not
    take them within `timeout_s`) or refused by MLflow fails, naming them and the sync command
    (records stay in the output folder)."""
    status = "FINISHED"
    try:
        yield
    except BaseException as err:
        status = "KILLED" if caused_by_signal(err) else "FAILED"
        raise
    finally:
        _record_status(outbox, status)
        wait_s = timeout_s if status == "FINISHED" else min(timeout_s, 10)
        problem = None
        if not _flush_unless_stopped(outbox, wait_s):
            problem = unsent_message(outbox, wait_s)
        elif outbox.rejected():
            problem = refused_message(outbox)
        if problem and status == "FINISHED":
            raise SegexpError(problem)
        if problem:
            print(f"warning: {problem}", file=sys.stderr)
