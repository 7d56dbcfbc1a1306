"""The SQLite store-creation lock, deterministically: several processes are held at a barrier
and released together onto a store that does not exist yet; the lock must let exactly one at a
time create or check the tables and the experiment, and all must end with the same experiment."""

import multiprocessing
import time

from mlflow.tracking import MlflowClient

PROCESSES = 3


def _contend(uri: str, barrier, intervals, results) -> None:
    """In a child: wait for the others, then ensure the experiment, noting when this process
    held the lock (the work inside is slowed so that overlaps could not go unnoticed)."""
    from segexp.tracking import store

    inner = store._ensure_experiment

    def slow_inside_the_lock(client, uri_, name):
        entered = time.monotonic()
        time.sleep(0.3)
        found = inner(client, uri_, name)
        intervals.append((entered, time.monotonic()))
        return found

    store._ensure_experiment = slow_inside_the_lock
    barrier.wait(timeout=120)
    results.append(store.ensure_experiment(uri, "locked"))


def test_processes_released_together_take_the_creation_lock_one_at_a_time(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    context = multiprocessing.get_context("spawn")  # no state shared with this test process
    with context.Manager() as manager:
        barrier = manager.Barrier(PROCESSES)
        intervals, results = manager.list(), manager.list()
        children = [
            context.Process(target=_contend, args=(uri, barrier, intervals, results))
            for _ in range(PROCESSES)
        ]
        for child in children:
            child.start()
        for child in children:
            child.join(timeout=300)
        codes = [child.exitcode for child in children]
        held, ids = sorted(intervals), list(results)
    assert codes == [0] * PROCESSES, "every process got the experiment"
    assert len(held) == PROCESSES and len(set(ids)) == 1, (held, ids)
    for (_, left), (entered, _) in zip(held, held[1:], strict=False):
        assert entered >= left, "two processes held the creation lock at once"
    client = MlflowClient(uri)
    assert sorted(e.name for e in client.search_experiments()) == ["Default", "locked"]
