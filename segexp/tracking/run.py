"""A job's MLflow run from start to end: open it (or reopen it to resume), and end it FINISHED,
KILLED or FAILED once everything it recorded is sent; a sweep job that failed before its run
existed still shows as a FAILED child."""

import dataclasses
import os
import socket
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from mlflow.tracking import MlflowClient

from segexp.errors import Interrupted, SegexpError
from segexp.tracking.outbox import ModelSender, Outbox
from segexp.tracking.run_folder import RunLink
from segexp.tracking.store import failing_when_locked


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
        client.update_run(link.run_id, status="RUNNING")
    except Exception as err:  # noqa: BLE001
        raise SegexpError(
            f"cannot resume run {link.run_id} in {link.tracking_uri}: {str(err).splitlines()[0]}"
        ) from None
    return Outbox(output_dir, link, send_model)


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
    uri = outbox.link.tracking_uri
    why = "stayed locked" if uri.startswith("sqlite:") else "did not answer"
    return (
        f"tracking store {uri} {why} for {waited_s:g} s: {len(outbox.pending())} record(s) of "
        f"run {outbox.link.run_id} are kept in {outbox.folder}. Send them with: "
        f"python -m segexp.sync {outbox.output_dir}"
    )


@contextmanager
def finishing(outbox: Outbox, timeout_s: float) -> Iterator[None]:
    """End the run with the block: FINISHED, KILLED (a signal) or FAILED (an error), after
    everything recorded is sent; waits up to `timeout_s` for a down or locked store, then
    fails a finished job with the sync command (records stay in the output folder)."""
    status = "FINISHED"
    try:
        yield
    except (Interrupted, KeyboardInterrupt):
        status = "KILLED"
        raise
    except BaseException:
        status = "FAILED"
        raise
    finally:
        outbox.status(status)
        wait_s = timeout_s if status == "FINISHED" else min(timeout_s, 10)
        if not outbox.flush_or_wait(wait_s):
            if status == "FINISHED":
                raise SegexpError(unsent_message(outbox, wait_s))
            print(f"warning: {unsent_message(outbox, wait_s)}", file=sys.stderr)
