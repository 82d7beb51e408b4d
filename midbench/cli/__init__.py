"""The Typer command-line interface: a thin shell over the library (no torch import at start-up)."""
