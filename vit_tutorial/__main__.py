"""The command line's entry point: `python -m vit_tutorial` and the installed `vit-tutorial`.

Importing torch takes seconds. Until the command has installed its own handlers (`cli.main`), Ctrl-C,
SIGTERM and SIGHUP end it at once with one line and the exit status a shell expects (130, 143, 129): nothing
has been read or written yet.
"""

from __future__ import annotations

import os
import signal
import sys


def _stop_while_starting(signum: int, frame) -> None:
    name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
    sys.stderr.write(f"vit-tutorial: stopped by {name} while starting; nothing was written\n")
    sys.stderr.flush()
    os._exit(128 + signum)


def run() -> int:
    signal.signal(signal.SIGINT, _stop_while_starting)
    for name in ("SIGTERM", "SIGHUP"):  # SIGHUP: a closing terminal (not on Windows)
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), _stop_while_starting)
    from .cli import main

    return main()


if __name__ == "__main__":
    sys.exit(run())
