"""A folder of workflow files -> versions of workflows: watcher, sync, loader, probe.

It hands workflows to a target (the engine's registry) and never runs a step itself.
"""
