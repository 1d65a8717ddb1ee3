"""Where the audit's work runs: in this process, in a local process pool, or on Dask.

All three offer one operation, :meth:`Executor.map_unordered`: apply a function to many
items and hand back each outcome as soon as it is ready, so the audit can commit results
one by one. Failures of the machinery itself (a worker process killed, a Dask worker
lost) come back as exceptions for the items concerned, never as the end of the audit.

Dask is imported only when a scheduler is given, so rtcheck works without it.
"""

from __future__ import annotations

import multiprocessing
import os
import select
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Protocol

from ..errors import ExitCode, RtcheckError

Outcome = tuple[int, Any]  # (item index, result or the exception that replaced it)


class ClusterError(RtcheckError):
    """Dask is missing, or its scheduler cannot be reached."""

    exit_code = ExitCode.USAGE_ERROR


class Executor(Protocol):
    name: str

    def map_unordered(self, fn: Callable[..., Any], items: Sequence[Any], *shared: Any) -> Iterator[Outcome]:
        """``fn(item, *shared)`` for every item, yielded as ``(index, result)`` when ready."""
        ...

    def close(self) -> None: ...


class SerialExecutor:
    """Everything in this process, one item after the other (``-j 1``)."""

    name = "serial"

    def map_unordered(self, fn: Callable[..., Any], items: Sequence[Any], *shared: Any) -> Iterator[Outcome]:
        for i, item in enumerate(items):
            try:
                yield i, fn(item, *shared)
            except Exception as exc:
                yield i, exc

    def close(self) -> None:
        pass


def _pool_context() -> multiprocessing.context.BaseContext:
    """forkserver where there is one: forking a process that runs a progress-bar thread
    (or Dask's threads) can deadlock a child; workers fork from a clean server instead,
    which has imported the audit's work functions once (cheap worker start)."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["rtcheck.audit.work"])
        return ctx
    return multiprocessing.get_context("spawn")


#: How often a worker looks whether the audit is still there, where the OS cannot tell it.
WATCHDOG_INTERVAL_S = 1.0


def die_with(audit_pid: int) -> None:
    """Worker initializer: end this worker as soon as the audit process ``audit_pid`` ends.

    A killed audit (SIGKILL, out of memory) cannot stop its workers, and they would live
    on for good: each holds the fork server's liveness pipe and its own task queue open,
    so neither the fork server nor the queue ever sees the audit go (and ``PR_SET_PDEATHSIG``
    does not help, since a worker's parent is the fork server, which stays). So a daemon
    thread of the worker waits on the audit itself: on a pidfd where the OS has one (it
    becomes readable the moment the process ends, zombie or not), else by asking every
    second whether the process still exists.
    """
    threading.Thread(target=_exit_when_gone, args=(audit_pid,), name="audit-watchdog", daemon=True).start()


def _exit_when_gone(pid: int) -> None:
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):  # not Linux >= 5.3, or the audit is already gone
        pidfd = None
    if pidfd is not None:
        select.select([pidfd], [], [])
    else:
        while _exists(pid):
            time.sleep(WATCHDOG_INTERVAL_S)
    os._exit(1)


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class PoolExecutor:
    """A local process pool of ``jobs`` workers, started on first use."""

    name = "processes"

    def __init__(self, jobs: int) -> None:
        self.jobs = jobs
        self._pool: ProcessPoolExecutor | None = None
        self._broken = False

    def _get(self) -> ProcessPoolExecutor:
        if self._broken:  # a worker was killed (out of memory?): start afresh for the next stage
            self.close()
            self._broken = False
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self.jobs, mp_context=_pool_context(), initializer=die_with, initargs=(os.getpid(),)
            )
        return self._pool

    def map_unordered(self, fn: Callable[..., Any], items: Sequence[Any], *shared: Any) -> Iterator[Outcome]:
        pool = self._get()
        # A bounded window of submissions: results come back in about the order of the
        # items, and an interrupted audit has little work in flight to lose.
        window = max(4 * self.jobs, 8)
        pending: dict[Future[Any], int] = {}
        next_item = 0
        while next_item < len(items) or pending:
            while next_item < len(items) and len(pending) < window:
                try:
                    future = pool.submit(fn, items[next_item], *shared)
                except BrokenProcessPool as exc:  # a worker died earlier: nothing more runs here
                    self._broken = True
                    yield from ((i, exc) for i in range(next_item, len(items)))
                    next_item = len(items)
                    break
                pending[future] = next_item
                next_item += 1
            if not pending:
                break
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                i = pending.pop(future)
                try:
                    yield i, future.result()
                except BrokenProcessPool as exc:
                    self._broken = True
                    yield i, exc
                except Exception as exc:
                    yield i, exc

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class DaskExecutor:
    """Tasks on a Dask distributed cluster (the workers must see the submission files at
    the same paths, e.g. on a shared file system, and have rtcheck installed)."""

    name = "dask"

    def __init__(self, address: str) -> None:
        try:
            from distributed import Client
        except ImportError:
            raise ClusterError(
                '--scheduler needs Dask: pip install "dask[distributed]" (or rtcheck[cluster])'
            ) from None
        try:
            self._client = Client(address, timeout="20s", set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise ClusterError(f"cannot reach the Dask scheduler at {address} ({exc})") from exc
        self.name = f"dask {address}"

    def map_unordered(self, fn: Callable[..., Any], items: Sequence[Any], *shared: Any) -> Iterator[Outcome]:
        from distributed import as_completed

        if not items:
            return
        # Shared arguments (the protocol) travel to each worker once, not with every task.
        shared_futures = [self._client.scatter(s, broadcast=True, hash=False) for s in shared]
        futures = {self._client.submit(fn, item, *shared_futures, pure=False): i for i, item in enumerate(items)}
        for future in as_completed(list(futures), loop=self._client.loop):
            i = futures.pop(future)  # the last reference: the cluster may forget the result
            try:
                yield i, future.result()
            except Exception as exc:  # KilledWorker, lost connection, ...
                yield i, exc

    def close(self) -> None:
        self._client.close()


def default_jobs() -> int:
    """All cores this process may use."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)
