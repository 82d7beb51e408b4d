"""Run the command-line interface with ``python -m midbench``."""

from midbench.cli.app import main

if __name__ == "__main__":
    main()
