"""The ``styleforge`` command line (typer): parses, calls styleforge.engine, prints."""

from ._app import app, main

__all__ = ["app", "main"]
