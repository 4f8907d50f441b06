"""Run a scenario that may take its own process down (a CUDA device-side assert poisons the process: every later
CUDA call fails) in a child process, and say what it did.

The child runs `scenario(*args)` and sends back either its return value or the exception it raised (type and
message). A child that dies without sending anything (an abort, a signal, a device-side assert that ends the
interpreter) is reported as a death with its exit code or signal: the parent goes on, and so does the run.
"""

from __future__ import annotations

import multiprocessing
import pickle
import signal
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Isolated:
    """What a scenario did in its child process: returned `value`, raised `error_type: error_message`, or died
    with `exit_code` (negative: killed by that signal) before saying anything."""

    value: object = None
    error_type: str | None = None
    error_message: str | None = None
    exit_code: int | None = None

    @property
    def died(self) -> bool:
        return self.exit_code not in (None, 0)

    @property
    def raised(self) -> bool:
        return self.error_type is not None

    def death(self) -> str:
        """How the process ended: "signal SIGABRT", "exit code 3"."""
        return f"signal {signal.Signals(-self.exit_code).name}" if self.exit_code < 0 else f"exit code {self.exit_code}"

    def describe(self) -> str:
        if self.died:
            return f"the process died ({self.death()}) without an exception it could report"
        if self.raised:
            return f"{self.error_type}: {self.error_message}"
        return f"returned {self.value!r}"


def _child(connection, scenario, args) -> None:
    # Plain pickle bytes: torch's multiprocessing pickler would pass tensors as shared-memory handles, which die
    # with this process before the parent opens them.
    try:
        value = scenario(*args)
    except BaseException as error:  # noqa: BLE001 - reported to the parent, whatever it is
        connection.send_bytes(pickle.dumps(("raised", f"{type(error).__module__}.{type(error).__qualname__}",
                                            str(error))))
    else:
        connection.send_bytes(pickle.dumps(("returned", value)))
    connection.close()


def needed(device: str) -> bool:
    """Whether an overflow on `device` can take its process down with it: a CUDA device-side assert does."""
    return device == "cuda"


def run_isolated(scenario: Callable, *args, timeout_s: float = 600) -> Isolated:
    """Run `scenario(*args)` (a module-level function, picklable arguments) in a spawned child process."""
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_child, args=(send, scenario, args), daemon=True)
    child.start()
    send.close()
    message = None
    if receive.poll(timeout_s):
        try:
            message = pickle.loads(receive.recv_bytes())
        except EOFError:  # the child died before sending anything
            message = None
    child.join(timeout=30)
    if child.is_alive():
        child.kill()
        child.join()
    if message is None:
        return Isolated(exit_code=child.exitcode if child.exitcode not in (None, 0) else -signal.SIGKILL)
    if message[0] == "raised":
        return Isolated(error_type=message[1], error_message=message[2], exit_code=child.exitcode)
    return Isolated(value=message[1], exit_code=child.exitcode)
