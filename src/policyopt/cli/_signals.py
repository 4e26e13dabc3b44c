"""Exit codes of the commands that run a search, and SIGTERM handled like Ctrl-C.

0: a scored result. 1: the run ended without one (every rollout of the seed prompt failed, or
the optimizer's LM kept failing). 2: a usage or config error, before anything ran.
130: stopped by Ctrl-C (SIGINT), 143: stopped by SIGTERM; both write the result so far
(result.json) and release the run directory's lock, as 128 + the signal's number says.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

__all__ = ["NO_RESULT", "STOP_CODES", "Terminated", "exit_code_for", "stop_signals"]

NO_RESULT = 1
STOP_CODES = (128 + signal.SIGINT, 128 + signal.SIGTERM)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread: the run stops exactly as on Ctrl-C."""


class Received:
    """Which stop signal arrived (0: none)."""

    signal: int = 0


def exit_code_for(received: Received) -> int:
    """128 + the stop signal's number: 130 after Ctrl-C, 143 after SIGTERM."""
    return 128 + int(received.signal or signal.SIGINT)


@contextlib.contextmanager
def stop_signals() -> Iterator[Received]:
    """While inside, SIGINT raises KeyboardInterrupt and SIGTERM :class:`Terminated`, and the
    returned object records which came; the handlers before are restored on the way out.

    A stop signal's exception that the block lets out (one that came while models load, or
    while the test split is scored after the search) ends the command with the signal's exit
    code, as one the block catches would (typer would say 130 for both signals).
    """
    received = Received()
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def on_signal(signum: int, frame: FrameType | None) -> None:
        received.signal = received.signal or signum
        raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()

    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in before:
        signal.signal(sig, on_signal)
    try:
        yield received
    except KeyboardInterrupt:
        if not received.signal:  # raised by the code inside, not by a signal
            raise
        raise SystemExit(exit_code_for(received)) from None
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
