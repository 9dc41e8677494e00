"""The ``rknas`` command (and ``python -m rknas``): Ctrl-C while the CLI still loads is one line too.

The console script imports its target module before calling it, and ``rknas.cli`` takes a
quarter second to load (typer, pydantic, rich): a Ctrl-C then printed Python's traceback.
"""

import sys


def main() -> None:
    """Load the CLI and run it (``rknas.cli.main``); interrupted while loading: exit 130."""
    try:
        from rknas.cli import main as run
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    run()


if __name__ == "__main__":
    main()
