"""SwarmLM's ledger: each node's append-only, signed, verifiable transparency log.

Imports nothing else of the project, so every other package may use it.
"""
