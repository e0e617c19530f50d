"""Executors run tasks and hand each finished record to a callback.

The local executor runs every task in its own child process (``spawn``), so an exception, a crash
of the process or a time-out in one experiment is recorded as ``failed`` and the others go on.
A cluster executor (Ray) runs exactly the same :class:`~autovi_core.experiment.Task` objects.
"""

from __future__ import annotations

import multiprocessing as mp
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from .errors import AutoviError, ConfigError
from .experiment import Task, run_task

ResultCallback = Callable[[Task, dict[str, Any]], None]
EXECUTORS = ("local",)


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
            if trace and self.debug:
                import sys

                print(trace, file=sys.stderr)
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
                return failure_record(task, _death_reason(process.exitcode, self.memory_limit_mb)), None
            process.kill()
            return failure_record(task, f"timed out after {self.timeout:g} s"), None
        finally:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
            receiver.close()


def _death_reason(exitcode: int | None, memory_limit_mb: float | None = None) -> str:
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


def make_executor(name: str, **options: Any) -> LocalExecutor:
    if name == "local":
        return LocalExecutor(**options)
    if name == "ray":
        raise ConfigError("executor 'ray' is not available in this version (planned); valid: local")
    raise ConfigError(f"unknown executor {name!r}; valid: {', '.join(EXECUTORS)}")
