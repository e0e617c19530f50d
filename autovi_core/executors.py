"""Executors run tasks and hand each finished record to a callback.

The local executor runs every task in its own child process (``spawn``), so an exception, a crash
of the process or a time-out in one experiment is recorded as ``failed`` and the others go on.
The Ray executor runs the same :class:`~autovi_core.experiment.Task` objects concurrently as Ray
tasks, on this machine or on a cluster; inside each Ray task the experiment again runs in its own
child process, so failures are isolated and reported exactly as locally.
"""

from __future__ import annotations

import multiprocessing as mp
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from .errors import AutoviError, ConfigError
from .experiment import Task, run_task

ResultCallback = Callable[[Task, dict[str, Any]], None]
EXECUTORS = ("local", "ray")


def _one_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip()[:500] if lines else "unknown error"


def failure_record(task: Task, reason: str) -> dict[str, Any]:
    record = task.base_record()
    record.update(status="failed", error=_one_line(reason))
    return record


def run_task_safely(task: Task) -> tuple[dict[str, Any], str | None]:
    """Run a task, turning any exception into a failed record; returns (record, traceback)."""
    try:
        return run_task(task), None
    except AutoviError as exc:
        return failure_record(task, str(exc)), None
    except MemoryError:
        return failure_record(task, "out of memory (MemoryError)"), traceback.format_exc()
    except Exception as exc:  # noqa: BLE001 - a plugin error must not stop the run
        return failure_record(task, f"{type(exc).__name__}: {exc}"), traceback.format_exc()


def _child(task_json: str, connection: Any, memory_limit_mb: float | None) -> None:
    if memory_limit_mb:
        import resource

        limit = int(memory_limit_mb * 1024 * 1024)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    record, trace = run_task_safely(Task.from_json(task_json))
    connection.send((record, trace))
    connection.close()


class LocalExecutor:
    """Runs tasks one after another on this machine, each isolated in a child process.

    ``isolate=False`` runs them in the current process (faster start, no crash isolation).
    ``memory_limit_mb`` caps each experiment process's address space (RLIMIT_AS).
    """

    def __init__(
        self,
        *,
        isolate: bool = True,
        timeout: float | None = None,
        memory_limit_mb: float | None = None,
        debug: bool = False,
    ) -> None:
        self.isolate = isolate
        self.timeout = timeout
        self.memory_limit_mb = memory_limit_mb
        self.debug = debug

    def run(self, tasks: Sequence[Task], on_result: ResultCallback) -> None:
        for task in tasks:
            record, trace = self._run_isolated(task) if self.isolate else run_task_safely(task)
            _show_trace(trace, self.debug)
            on_result(task, record)

    def _run_isolated(self, task: Task) -> tuple[dict[str, Any], str | None]:
        context = mp.get_context("spawn")
        receiver, sender = context.Pipe(duplex=False)
        process = context.Process(target=_child, args=(task.to_json(), sender, self.memory_limit_mb), daemon=True)
        process.start()
        sender.close()
        try:
            if receiver.poll(self.timeout):
                try:
                    return receiver.recv()
                except EOFError:
                    pass
                process.join()
                return failure_record(task, death_reason(process.exitcode, self.memory_limit_mb)), None
            process.kill()
            return failure_record(task, f"timed out after {self.timeout:g} s"), None
        finally:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
            receiver.close()


def _show_trace(trace: str | None, debug: bool) -> None:
    if trace and debug:
        import sys

        print(trace, file=sys.stderr)


def _isolated_task(task_json: str, timeout: float | None, memory_limit_mb: float | None) -> tuple[dict[str, Any], str | None]:
    """The body of one Ray task: the experiment in a child process of the Ray worker, as run locally."""
    return LocalExecutor(timeout=timeout, memory_limit_mb=memory_limit_mb)._run_isolated(Task.from_json(task_json))


LOCAL_RAY_OBJECT_STORE_MB = 256
"""Object store of a Ray instance started here: experiments return small records, not arrays."""


class RayExecutor:
    """Runs tasks concurrently as Ray tasks and hands over each record as soon as it is done.

    ``address`` (or the ``RAY_ADDRESS`` environment variable) names a running cluster; without it a
    Ray instance is started on this machine for the run, using its cores (and GPUs). Each task asks
    Ray for ``cpus_per_task`` CPUs and ``gpus_per_task`` GPUs (default: 1 when the cluster has a GPU
    and the run does not ask for ``--device cpu``, else 0), so Ray runs as many at once as fit.
    On a cluster, ``--output`` must be on a file system every node sees (maps are written there).
    """

    def __init__(
        self,
        *,
        address: str | None = None,
        cpus_per_task: float = 1.0,
        gpus_per_task: float | None = None,
        timeout: float | None = None,
        memory_limit_mb: float | None = None,
        debug: bool = False,
    ) -> None:
        if cpus_per_task <= 0 or (gpus_per_task is not None and gpus_per_task < 0):
            raise ConfigError("Ray resources per task must be positive (CPUs) and non-negative (GPUs)")
        self.address = address
        self.cpus_per_task = cpus_per_task
        self.gpus_per_task = gpus_per_task
        self.timeout = timeout
        self.memory_limit_mb = memory_limit_mb
        self.debug = debug

    @staticmethod
    def _ray() -> Any:
        try:
            import ray
        except ImportError:
            raise ConfigError("executor 'ray' needs Ray: pip install 'autovi-core[ray]'") from None
        return ray

    def _start(self, ray: Any) -> bool:
        """Connect to the cluster or start a local instance; True when this call started it."""
        if ray.is_initialized():
            return False
        options: dict[str, Any] = {"include_dashboard": False, "logging_level": "ERROR", "log_to_driver": self.debug}
        import os

        address = self.address
        if not (address or os.environ.get("RAY_ADDRESS")):
            # "local": a new instance of our own, never another process's (ray.init(None) would join the
            # cluster another autovi run started on this machine and share, then stop, its workers)
            address = "local"
            options["object_store_memory"] = LOCAL_RAY_OBJECT_STORE_MB * 1024 * 1024
        try:
            ray.init(address=address, **options)
        except Exception as exc:  # noqa: BLE001 - Ray raises many kinds; all mean "no cluster"
            raise ConfigError(f"could not start or reach Ray{f' at {self.address}' if self.address else ''}: {exc}") from None
        return True

    def run(self, tasks: Sequence[Task], on_result: ResultCallback) -> None:
        ray = self._ray()
        started = self._start(ray)
        try:
            gpus = self.gpus_per_task
            if gpus is None:
                wants_gpu = any(t.device != "cpu" for t in tasks)
                gpus = 1 if wants_gpu and ray.cluster_resources().get("GPU", 0) >= 1 else 0
            remote = ray.remote(num_cpus=self.cpus_per_task, num_gpus=gpus, max_retries=0)(_isolated_task)
            pending = {remote.remote(t.to_json(), self.timeout, self.memory_limit_mb): t for t in tasks}
            try:
                while pending:
                    ready, _ = ray.wait(list(pending), num_returns=1)
                    for ref in ready:
                        task = pending.pop(ref)
                        try:
                            record, trace = ray.get(ref)
                        except Exception as exc:  # noqa: BLE001 - a lost worker or node fails this task only
                            record, trace = failure_record(task, f"Ray task failed: {type(exc).__name__}: {exc}"), None
                        _show_trace(trace, self.debug)
                        on_result(task, record)
            finally:
                for ref in pending:
                    ray.cancel(ref, force=True)
        finally:
            if started:
                ray.shutdown()


def death_reason(exitcode: int | None, memory_limit_mb: float | None = None) -> str:
    if exitcode is not None and exitcode < 0:
        import signal

        name = signal.Signals(-exitcode).name if -exitcode in signal.valid_signals() else str(-exitcode)
        hint = ""
        if -exitcode == signal.SIGKILL:
            hint = " (out of memory?)"
        elif -exitcode == signal.SIGABRT and memory_limit_mb:
            hint = (
                f" (a native allocation failed? --memory-limit {memory_limit_mb:g} MB caps the address space, "
                "which native libraries reserve generously: try a higher limit)"
            )
        return f"experiment process was killed by {name}{hint}"
    return f"experiment process died (exit code {exitcode})"


def make_executor(name: str, *, ray_options: dict[str, Any] | None = None, **options: Any) -> LocalExecutor | RayExecutor:
    """``local`` or ``ray``; ``options`` are common to both, ``ray_options`` only for Ray."""
    if name == "local":
        return LocalExecutor(**options)
    if name == "ray":
        options.pop("isolate", None)  # Ray tasks always run the experiment in a child process
        return RayExecutor(**(ray_options or {}), **options)
    raise ConfigError(f"unknown executor {name!r}; valid: {', '.join(EXECUTORS)}")
