"""The commands' stop signals: SIGTERM and Ctrl-C end a command with 143 and 130, wherever in
the command the signal comes."""

from __future__ import annotations

import os
import signal
import time

import pytest

from policyopt.cli._signals import stop_signals


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_the_command_does_not_catch_still_exits_with_its_code(
    signum: int, code: int
) -> None:
    before = signal.getsignal(signum)
    with pytest.raises(SystemExit) as exited, stop_signals():
        os.kill(os.getpid(), signum)
        time.sleep(5)  # e.g. a model loading: the signal's exception comes out of it
    assert exited.value.code == code
    assert signal.getsignal(signum) is before


def test_a_keyboard_interrupt_raised_by_code_is_left_alone() -> None:
    with pytest.raises(KeyboardInterrupt), stop_signals():
        raise KeyboardInterrupt
