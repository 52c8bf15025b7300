"""Typed errors of the ledger: each message says what went wrong and what to do about it.

Every error a user can cause derives from `LedgerError`, so a CLI prints `error: <message>` and
exits 2 without a traceback; `VerifyError` (a log that fails verification) exits 1 instead.
"""

from __future__ import annotations


class LedgerError(Exception):
    """Base class of every error the ledger raises on bad input, files or proofs."""


class ProofError(LedgerError):
    """A Merkle inclusion or consistency proof does not verify."""


class KeyFormatError(LedgerError):
    """A key file, public key or peer ID is malformed or not Ed25519."""


class SignatureError(LedgerError):
    """A signature does not verify against the key it claims."""


class EncodingError(LedgerError):
    """Bytes are not the one canonical encoding of a valid ledger object."""


class NoteError(LedgerError):
    """A signed note, checkpoint or cosignature is malformed or not signed as required."""


class ReceiptError(LedgerError):
    """A client receipt is malformed, wrongly signed, or does not match its session."""


class StoreError(LedgerError):
    """The ledger file cannot be opened or written as a ledger."""


class VerifyError(LedgerError):
    """A stored ledger fails offline verification; `index` names the first bad entry."""

    def __init__(self, index: int | None, message: str) -> None:
        self.index = index
        where = "ledger" if index is None else f"entry {index}"
        super().__init__(f"{where}: {message}")


class UsageError(LedgerError):
    """A command-line argument or input file is not usable as given."""
