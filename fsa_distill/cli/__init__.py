"""The top layer: the `fsa-distill` command line (typer) and its terminal output."""
