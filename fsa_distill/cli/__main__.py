"""`python -m fsa_distill.cli …` runs the command line (the tests start it this way)."""

from fsa_distill.cli.app import app

app()
