"""The node daemon: serving spans of blocks, announcing them, keeping the ledger.

`routing` is imported first so that hivemind loads without its training stacks (routing/hivemind_import.py)."""

import routing  # noqa: F401
