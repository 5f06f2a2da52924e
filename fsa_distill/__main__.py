"""`python -m fsa_distill …` runs the command line too: the usual guess after `pip install` when the venv's
`bin/` (and so the `fsa-distill` script) is not on PATH."""

from fsa_distill.cli.app import app

app()
