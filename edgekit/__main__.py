"""``python -m edgekit`` (and ``torchrun -m edgekit train ...``)."""

from edgekit.cli import main

if __name__ == "__main__":
    main()
