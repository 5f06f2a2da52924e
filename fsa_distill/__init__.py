"""fsa-distill: distil aspect-level sentiment understanding from a teacher LLM into a small student."""

__version__ = "0.1.0"
