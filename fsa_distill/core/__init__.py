"""The bottom layer: config, errors, digests and all-or-nothing files. Imports nothing else of fsa_distill."""
