"""What users write: workflows, steps, triggers, modes, conditions, services, env, hooks.

Frozen definitions checked when they are built, with no I/O and no event loop: a workflow
file imports only this layer (through `orchestrator`'s public names).
"""
