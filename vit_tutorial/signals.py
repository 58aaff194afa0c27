"""Stop signals as interrupts: SIGTERM (what `kill` or a scheduler sends) and SIGHUP (a closing terminal) end a
command as Ctrl-C does, so that every command has one way of stopping: finished epochs kept, no
half-written file, one line saying how to go on.

The first signal raises where the process is; any signal after it is ignored while the command cleans up
(a second Ctrl-C a few milliseconds later would otherwise interrupt the clean-up itself, torch's exit hooks
included, and print their traceback).
"""

from __future__ import annotations

import signal

# what `kill`, a scheduler (SIGTERM) or a closing terminal (SIGHUP) sends; Windows has neither SIGHUP nor its kind
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where the process is, so that it ends a run as Ctrl-C does; `exit_code` is what a
    shell reports for the signal (143 for SIGTERM, 129 for SIGHUP)."""

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__(signal.Signals(signum).name)
        self.exit_code = 128 + signum


def terminate_as_interrupt() -> None:
    """Make SIGINT, SIGTERM and SIGHUP raise (KeyboardInterrupt, or `Terminated` with its exit code) once; the
    signals that follow the first are ignored."""

    def handler(signum, frame):
        for other in (signal.SIGINT, *STOP_SIGNALS):
            signal.signal(other, signal.SIG_IGN)
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise Terminated(signum)

    for signum in (signal.SIGINT, *STOP_SIGNALS):
        signal.signal(signum, handler)


def exit_code(stop: BaseException) -> int:
    """130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP."""
    return getattr(stop, "exit_code", 130)
