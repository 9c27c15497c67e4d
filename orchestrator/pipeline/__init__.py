"""The pipeline runner (`orchestrator.run`): steps in series, isolated state, source text.

Calling one step under its policy (`steps`) is shared with the engine's executor; the
import policy (`validation`) is shared with the folder loader.
"""
