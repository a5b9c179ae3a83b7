"""``python -m worldmodel.evaluate``: the CLI of ``worldmodel.evaluate.cli``."""

from worldmodel.evaluate.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
