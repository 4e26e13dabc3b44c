"""Fixtures shared by the unit tests."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest


@pytest.fixture
def sigint_raises() -> Iterator[None]:
    """Ctrl-C raises KeyboardInterrupt in the main thread during the test.

    A process started in the background by a non-interactive shell (``pytest ... &``, some CI
    runners) inherits SIGINT ignored, and Python then leaves it ignored: ``_thread.interrupt_main``
    does nothing, and a test that waits for Ctrl-C to end a hanging run waits for the hang guard
    (600 s) instead. The default handler is installed for the test and the old one put back.
    """
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
