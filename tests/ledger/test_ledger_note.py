"""Signed notes, checkpoints and cosignatures: C2SP formats, strictly parsed, interoperable."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger import note
from ledger.checkpoint import (
    Checkpoint,
    cosign_checkpoint,
    log_key,
    open_checkpoint,
    sign_checkpoint,
    verify_cosignature,
    witness_key,
)
from ledger.errors import NoteError
from ledger.keys import Identity

# golang.org/x/mod/sumdb/note's documented example (public test vector).
GO_SIGNER = "AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"  # 0x01 || Ed25519 seed
GO_VERIFIER = "ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"  # 0x01 || public key, key ID c74f20a3
GO_TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
GO_NOTE = (
    GO_TEXT
    + "\n— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)

# A public staging CT checkpoint cosigned (cosignature/v1) by the remora.n621.de witness.
WITNESSED = """arche2025h1.staging.ct.transparency.dev
1432088532
U7WM79jrzyhGZ5/GUBTpM7NzwdyfFx61t3RovgcC4Ro=

— arche2025h1.staging.ct.transparency.dev zTM8sQAAAZ5W0WdjBAMARjBEAiBjW5IQf9pvsYLfQFX6hoGREPMHbdQ3urbllzalApkptQIgIpwtEroeW2BXaHAI4kJXFbon5Ch9MNL5zRNZ55lvGt0=
— remora.n621.de 2net5wAAAABqEiEgPlfF3V06o0Y+fHM+J5J9s27wgxxcOVSpZ/2g/KSiXCg9DEZI+aVCIobWX9sXTynk5XeU/zZ0WBxtqB0DrAWfBw==
"""
REMORA = "BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2"  # 0x04 || public key, key ID da77ade7


def test_signing_reproduces_the_go_reference_note_byte_for_byte() -> None:
    key = Ed25519PrivateKey.from_private_bytes(base64.b64decode(GO_SIGNER)[1:])
    signed = str(note.Note(GO_TEXT, (note.sign(GO_TEXT, "PeterNeumann", key),)))
    assert signed == GO_NOTE
    public = base64.b64decode(GO_VERIFIER)[1:]
    assert note.key_id("PeterNeumann", note.ED25519, public).hex() == "c74f20a3"
    parsed = note.parse(GO_NOTE)
    note.verify(parsed, "PeterNeumann", public)
    with pytest.raises(NoteError, match="does not verify"):
        note.verify(note.parse(GO_NOTE.replace("cryptography", "cryptographY")), "PeterNeumann", public)


def test_a_real_witness_cosignature_verifies() -> None:
    public = base64.b64decode(REMORA)[1:]
    assert note.key_id("remora.n621.de", note.COSIGNATURE_V1, public).hex() == "da77ade7"
    parsed = note.parse(WITNESSED)
    assert note.verify_cosignature(parsed, "remora.n621.de", public) > 1_700_000_000
    with pytest.raises(NoteError):
        note.verify_cosignature(note.parse(WITNESSED.replace("1432088532", "1432088533")), "remora.n621.de", public)


def test_note_round_trips_and_unknown_signatures_are_ignored() -> None:
    key = Ed25519PrivateKey.generate()
    other = note.sign(GO_TEXT, "someone.else", Ed25519PrivateKey.generate())
    text = str(note.Note(GO_TEXT, (other, note.sign(GO_TEXT, "me", key))))
    parsed = note.parse(text)
    assert str(parsed) == text and len(parsed.signatures) == 2
    note.verify(parsed, "me", key.public_key().public_bytes_raw())
    with pytest.raises(NoteError, match="not signed by"):
        note.verify(parsed, "nobody", key.public_key().public_bytes_raw())


SIG = "— me " + base64.b64encode(bytes(68)).decode()


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("a\n" + SIG + "\n", id="no-blank-line"),
        pytest.param("a\n\n" + SIG, id="no-final-newline"),
        pytest.param("a\n\n", id="no-signatures"),
        pytest.param("a\n\n- me AAAA\n", id="hyphen-not-em-dash"),
        pytest.param("a\n\n— me  " + SIG[5:] + "\n", id="double-space"),
        pytest.param("a\n\n— m+e " + SIG[5:] + "\n", id="plus-in-name"),
        pytest.param("a\n\n— me " + SIG[5:].rstrip("=") + "\n", id="unpadded-base64"),
        pytest.param("a\n\n— me AAAAAB==\n", id="non-canonical-base64-bits"),
        pytest.param("a\n\n— me AAAA\n", id="signature-shorter-than-key-id"),
        pytest.param("a\tb\n\n" + SIG + "\n", id="control-character"),
        pytest.param("a\n\n" + (SIG + "\n") * 101, id="too-many-signatures"),
        pytest.param("a" * 70000 + "\n\n" + SIG + "\n", id="too-large"),
    ],
)
def test_malformed_notes_are_rejected(text: str) -> None:
    with pytest.raises(NoteError):
        note.parse(text)


def test_non_utf8_note_is_rejected() -> None:
    with pytest.raises(NoteError, match="UTF-8"):
        note.parse(b"a\xff\n\n" + SIG.encode() + b"\n")


def _body(peer: str, size: str, root: str) -> str:
    return f"swarmlm/{peer}\n{size}\n{root}\n"


ROOT_B64 = base64.b64encode(bytes(range(32))).decode()


def test_checkpoint_body_parses_strictly(identity: Identity) -> None:
    assert Checkpoint.from_text(_body(identity.peer_id, "12", ROOT_B64)) == Checkpoint(
        f"swarmlm/{identity.peer_id}", 12, bytes(range(32))
    )
    assert Checkpoint.from_text(_body(identity.peer_id, "0", ROOT_B64)).size == 0


@pytest.mark.parametrize(
    "size, root, extra",
    [
        pytest.param("012", ROOT_B64, "", id="leading-zero"),
        pytest.param("+12", ROOT_B64, "", id="plus-sign"),
        pytest.param("1e3", ROOT_B64, "", id="exponent"),
        pytest.param("١٢", ROOT_B64, "", id="non-ascii-digits"),
        pytest.param(str(1 << 63), ROOT_B64, "", id="size-out-of-range"),
        pytest.param("12", ROOT_B64.rstrip("="), "", id="unpadded-root"),
        pytest.param("12", base64.b64encode(bytes(31)).decode(), "", id="short-root"),
        pytest.param("12", base64.urlsafe_b64encode(b"\xff" * 32).decode(), "", id="url-safe-base64"),
        pytest.param("12", ROOT_B64, "extension\n", id="extension-line"),
    ],
)
def test_malformed_checkpoint_bodies_are_rejected(identity: Identity, size: str, root: str, extra: str) -> None:
    with pytest.raises(NoteError):
        Checkpoint.from_text(_body(identity.peer_id, size, root) + extra)


def test_checkpoint_origin_must_be_a_swarmlm_ed25519_peer() -> None:
    with pytest.raises(NoteError):
        Checkpoint.from_text(f"example.com/log\n1\n{ROOT_B64}\n")
    with pytest.raises(NoteError):
        Checkpoint.from_text(f"swarmlm/QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N\n1\n{ROOT_B64}\n")


def test_checkpoint_is_signed_by_the_log_key_not_the_identity(identity: Identity) -> None:
    signed = sign_checkpoint(identity, 5, bytes(range(32)))
    log_public = log_key(identity).public_key().public_bytes_raw()
    checkpoint, _ = open_checkpoint(signed, identity.peer_id, log_public)
    assert (checkpoint.size, checkpoint.root, checkpoint.peer_id) == (5, bytes(range(32)), identity.peer_id)
    with pytest.raises(NoteError):
        open_checkpoint(signed, identity.peer_id, identity.public_key)
    with pytest.raises(NoteError, match="expected"):
        open_checkpoint(signed, Identity.generate().peer_id, log_public)
    with pytest.raises(NoteError):
        open_checkpoint(signed.replace("\n5\n", "\n6\n"), identity.peer_id, log_public)


def test_cosignature_binds_witness_time_and_checkpoint(identity: Identity) -> None:
    witness = Identity.generate()
    parsed = note.parse(sign_checkpoint(identity, 5, bytes(32)))
    line = cosign_checkpoint(witness, parsed, 1_700_000_123).line()
    cosigned = note.parse(str(parsed) + line)
    witness_public = witness_key(witness).public_key().public_bytes_raw()
    assert verify_cosignature(cosigned, witness.peer_id, witness_public) == 1_700_000_123
    with pytest.raises(NoteError):
        verify_cosignature(cosigned, witness.peer_id, log_key(witness).public_key().public_bytes_raw())
    other = note.parse(sign_checkpoint(identity, 6, bytes(32)))
    with pytest.raises(NoteError, match="does not verify"):
        verify_cosignature(note.parse(str(other) + line), witness.peer_id, witness_public)
