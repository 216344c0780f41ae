"""Where a run stopped: :class:`StopOnSignal` logs it when Ctrl-C or SIGTERM ends an engine's run.

The signals themselves are turned into exceptions by the program that owns the process (the command line's
:func:`~monai_cilmp.utils.signals.process_signal_handlers`), never by an engine: a library call installs no handler.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from monai_cilmp.utils.signals import Terminated

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["StopOnSignal", "Terminated"]


class StopOnSignal:
    """Log one line saying where a run stopped when Ctrl-C or SIGTERM (or another ``SystemExit``) ends it, and let
    the exception go on (Ignite would swallow it). Installs no signal handler: see :func:`process_signal_handlers`.

    Args:
        logger_name: where the line goes (``None``: nowhere).
        hint: appended to that line (e.g. how to resume).
    """

    def __init__(self, logger_name: str | None = None, hint: str = "") -> None:
        self.logger = logging.getLogger(logger_name) if logger_name else None
        self.hint = hint

    def attach(self, engine: Engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.EXCEPTION_RAISED, self.exception_raised)

    def exception_raised(self, engine: Engine, e: BaseException) -> None:
        """Say why the run stopped, and re-raise ``e``."""
        if self.logger is not None and isinstance(e, (SystemExit, KeyboardInterrupt)):
            reason = (
                "SIGTERM" if isinstance(e, Terminated) else "Ctrl-C" if isinstance(e, KeyboardInterrupt) else "exit"
            )
            where = f"epoch {engine.state.epoch}, iteration {engine.state.iteration}"
            self.logger.warning(f"stopped by {reason} in {where}{'; ' + self.hint if self.hint else ''}")
        raise e
