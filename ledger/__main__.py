"""``ledger`` (and ``python -m ledger``): the command. Ctrl-C ends it quietly, with exit status 130, at any
moment: while its modules load, its commands are built, it runs or it closes."""

from __future__ import annotations

import signal
import sys


def main() -> None:
    try:
        from ledger.cli import main as run

        run()
    except KeyboardInterrupt:  # while its commands are built, or as it closes, too: not only while one runs
        sys.exit(130)
    finally:  # ending: nothing is left to interrupt (a Ctrl-C as the interpreter shuts down killed it by the signal)
        signal.signal(signal.SIGINT, signal.SIG_IGN)


if __name__ == "__main__":
    main()
