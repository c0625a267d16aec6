"""``ledger`` (and ``python -m ledger``): the command. Ctrl-C while its modules load ends it as it does once it
runs: quietly, with exit status 130."""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from ledger.cli import main as run
    except KeyboardInterrupt:
        sys.exit(130)
    run()


if __name__ == "__main__":
    main()
