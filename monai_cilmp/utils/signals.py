"""The process's signal handlers: Ctrl-C and SIGTERM unwind once, a second one ends the process at once.

Signal handlers belong to the program that owns the process: :func:`process_signal_handlers` is installed by the
``monai-cilmp`` command line around the command it runs, and put back when the command ends. Nothing in this package
installs a handler when it is imported or called as a library (``create_trainer(...).run()`` inside someone else's
program or pytest leaves Ctrl-C and SIGTERM to that program).

Inside :func:`process_signal_handlers`:

- the first Ctrl-C raises ``KeyboardInterrupt`` as Python does, and the first SIGTERM raises :class:`Terminated` (a
  ``SystemExit`` with the shell's status ``128 + 15 = 143``) in the main thread, where Ctrl-C would: Ignite drops its
  data iterator (whose workers are shut down) and the command exits normally (130 after Ctrl-C, 143 after SIGTERM).
  Checkpoints are written atomically at the end of an epoch, so ``last.pt`` is always a complete epoch and
  ``--resume`` continues from it;
- a second Ctrl-C or SIGTERM, while the first one unwinds (e.g. a worker that does not end), ends the process at once
  with ``128 + the signal's number`` (130 for Ctrl-C, 143 for SIGTERM); DataLoader workers notice that their parent
  is gone and exit.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["HANDLED_SIGNALS", "Terminated", "process_signal_handlers"]

#: the signals handled by :func:`process_signal_handlers` (SIGTERM does not exist on every platform)
HANDLED_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM") if hasattr(signal, name))


class Terminated(SystemExit):
    """Raised in the main thread when the process receives SIGTERM; exits with status ``128 + SIGTERM`` (143)."""

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__(128 + int(signum))
        self.signum = int(signum)


def _end_now(signum: int, frame: Any) -> None:
    """A second signal: no more clean-up, exit with ``128 + signum`` (``os._exit`` runs no Python code)."""
    name = signal.Signals(signum).name
    os.write(2, f"\n{name} again: stopping at once (exit status {128 + signum}).\n".encode())
    os._exit(128 + signum)


def _first_signal(signum: int, frame: Any) -> None:
    for handled in HANDLED_SIGNALS:  # from now on, any of them ends the process at once
        signal.signal(handled, _end_now)
    if signum == getattr(signal, "SIGINT", None):
        raise KeyboardInterrupt
    raise Terminated(signum)


@contextmanager
def process_signal_handlers() -> Iterator[None]:
    """Within the block, the first Ctrl-C or SIGTERM unwinds (``KeyboardInterrupt``, :class:`Terminated`) and a
    second one ends the process at once. When the block ends without a signal the previous handlers are put back;
    after one, a second signal still ends the process at once (the program is stopping: its interpreter's own
    clean-up at exit must not swallow it either).

    For the program that owns the process only (the ``monai-cilmp`` command line); outside the main thread it does
    nothing, as Python allows signal handlers only there.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in HANDLED_SIGNALS}
    try:
        for s in HANDLED_SIGNALS:
            signal.signal(s, _first_signal)
        yield
    finally:
        for s, handler in previous.items():
            if signal.getsignal(s) is _first_signal:  # no signal came
                signal.signal(s, handler if handler is not None else signal.SIG_DFL)
