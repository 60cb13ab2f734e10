"""Entry point: `python -m simulator --help`."""

from simulator.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
