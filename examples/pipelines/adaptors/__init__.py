"""Adaptors imported by pipelines run with `--module-home examples/pipelines`."""
