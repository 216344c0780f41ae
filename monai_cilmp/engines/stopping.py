"""Stopping a run cleanly: SIGTERM unwinds like Ctrl-C, so that DataLoader workers end and checkpoints stay intact.

Python's default action for SIGTERM kills the process on the spot: no ``finally`` block, no ``atexit`` handler runs,
so the DataLoader's worker processes are orphaned and live on until they notice (or, when busy or blocked, much
longer). While an engine runs, :class:`StopOnSignal` turns SIGTERM into :class:`Terminated` (a ``SystemExit`` with
the shell's status 143) raised in the main thread, exactly where Ctrl-C raises ``KeyboardInterrupt``: Ignite then
drops its data iterator (whose workers are shut down) and the interpreter exits normally, ending any daemonic worker
still there. Checkpoints are written atomically at the end of an epoch, so ``last.pt`` is always a complete epoch
and ``--resume`` continues from it.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["StopOnSignal", "Terminated"]


class Terminated(SystemExit):
    """Raised in the main thread when the process receives SIGTERM; exits with status ``128 + SIGTERM`` (143)."""

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__(128 + int(signum))
        self.signum = int(signum)


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated(signum)


class StopOnSignal:
    """While the engine runs (main thread only), SIGTERM raises :class:`Terminated`; the previous handler is put
    back when the run ends, however it ends.

    Args:
        logger_name: where the one line saying why and where the run stopped goes (``None``: nowhere).
        hint: appended to that line (e.g. how to resume).
    """

    def __init__(self, logger_name: str | None = None, hint: str = "") -> None:
        self.logger = logging.getLogger(logger_name) if logger_name else None
        self.hint = hint
        self._previous: Any = None
        self._installed = False

    def attach(self, engine: Engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, self.install)
        engine.add_event_handler(Events.COMPLETED, self.restore)
        engine.add_event_handler(Events.TERMINATE, self.restore)
        engine.add_event_handler(Events.EXCEPTION_RAISED, self.exception_raised)

    def install(self, engine: Engine | None = None) -> None:
        if self._installed or threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        self._previous = signal.signal(signal.SIGTERM, _raise_terminated)
        self._installed = True

    def restore(self, engine: Engine | None = None) -> None:
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous if self._previous is not None else signal.SIG_DFL)
            self._installed = False

    def exception_raised(self, engine: Engine, e: BaseException) -> None:
        """Put the previous handler back, say why the run stopped, and re-raise (Ignite would swallow ``e``)."""
        self.restore(engine)
        if self.logger is not None and isinstance(e, (Terminated, KeyboardInterrupt)):
            reason = "SIGTERM" if isinstance(e, Terminated) else "Ctrl-C"
            where = f"epoch {engine.state.epoch}, iteration {engine.state.iteration}"
            self.logger.warning(f"stopped by {reason} in {where}{'; ' + self.hint if self.hint else ''}")
        raise e
