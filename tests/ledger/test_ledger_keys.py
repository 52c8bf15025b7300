"""The node identity: key file format, peer IDs, domain-separated signatures, hivemind interop."""

from __future__ import annotations

import os
import stat
from concurrent.futures import ThreadPoolExecutor

import pytest

from ledger import keys
from ledger.errors import KeyFormatError
from ledger.keys import Identity


def test_identity_file_is_created_once_with_mode_0600(tmp_path) -> None:
    path = tmp_path / "sub" / "identity.key"
    first = Identity.load_or_create(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert path.read_bytes()[:4] == bytes([0x08, 0x01, 0x12, 0x40]) and len(path.read_bytes()) == 68
    again = Identity.load_or_create(path)
    assert again.peer_id == first.peer_id and again.public_key == first.public_key


def test_concurrent_first_use_agrees_on_one_key_and_leaves_no_scratch_files(tmp_path) -> None:
    path = tmp_path / "identity.key"
    with ThreadPoolExecutor(8) as pool:
        peers = set(pool.map(lambda _: Identity.load_or_create(path).peer_id, range(32)))
    assert len(peers) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["identity.key"]


def test_peer_id_embeds_the_public_key() -> None:
    identity = Identity.generate()
    assert identity.peer_id.startswith("12D3KooW")
    assert keys.public_key_from_peer_id(identity.peer_id) == identity.public_key


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "not base58 0OIl",
        "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N",  # an RSA/sha256 peer ID
        "12D3KooW",
    ],
)
def test_non_ed25519_or_malformed_peer_ids_are_rejected(bad: str) -> None:
    with pytest.raises(KeyFormatError):
        keys.public_key_from_peer_id(bad)


def test_signature_verifies_only_in_its_own_context() -> None:
    identity = Identity.generate()
    sig = identity.sign(keys.LEDGER_ENTRY, b"hello")
    assert keys.verify(identity.peer_id, keys.LEDGER_ENTRY, b"hello", sig)
    assert keys.verify(identity.public_key, keys.LEDGER_ENTRY, b"hello", sig)
    assert not keys.verify(identity.peer_id, keys.RECEIPT, b"hello", sig)
    assert not keys.verify(identity.peer_id, keys.LEDGER_ENTRY, b"hellO", sig)
    assert not keys.verify(Identity.generate().peer_id, keys.LEDGER_ENTRY, b"hello", sig)
    assert not keys.verify(identity.peer_id, keys.LEDGER_ENTRY, b"hello", sig[:-1])


def test_unregistered_context_is_refused() -> None:
    with pytest.raises(ValueError, match="unregistered"):
        Identity.generate().sign("made-up/v1", b"x")


def test_derived_keys_are_deterministic_and_distinct() -> None:
    identity = Identity.generate()
    raw = lambda k: k.public_key().public_bytes_raw()  # noqa: E731
    assert raw(identity.derive_key("log")) == raw(Identity(identity.seed).derive_key("log"))
    assert raw(identity.derive_key("log")) != raw(identity.derive_key("witness"))
    assert raw(identity.derive_key("log")) != identity.public_key


@pytest.mark.parametrize(
    "data",
    [b"", b"\x08\x01\x12\x40" + bytes(63), b"\x08\x01\x12\x20" + bytes(64), b"junk" * 17],
)
def test_malformed_key_files_are_rejected(tmp_path, data: bytes) -> None:
    path = tmp_path / "identity.key"
    path.write_bytes(data)
    with pytest.raises(KeyFormatError):
        Identity.load_or_create(path)


def test_key_file_with_mismatched_public_key_is_rejected(tmp_path) -> None:
    path = tmp_path / "identity.key"
    a, b = Identity.generate(), Identity.generate()
    path.write_bytes(a.to_bytes()[:36] + b.public_key)
    with pytest.raises(KeyFormatError, match="corrupt"):
        Identity.load_or_create(path)


# --- Interop with hivemind's p2pd, which reads the same file. ---


def test_hivemind_protobuf_ed25519_key_matches_ours() -> None:
    crypto_pb2 = pytest.importorskip("hivemind.proto.crypto_pb2")
    identity = Identity.generate()
    message = crypto_pb2.PrivateKey(key_type=crypto_pb2.KeyType.Ed25519, data=identity.seed + identity.public_key)
    assert message.SerializeToString() == identity.to_bytes()
    public = crypto_pb2.PublicKey(key_type=crypto_pb2.KeyType.Ed25519, data=identity.public_key)
    assert public.SerializeToString() == bytes([0x08, 0x01, 0x12, 0x20]) + identity.public_key
    assert Identity.from_bytes(message.SerializeToString()).peer_id == identity.peer_id


def test_hivemind_generated_rsa_identity_is_rejected_clearly(tmp_path) -> None:
    p2p_daemon = pytest.importorskip("hivemind.p2p.p2p_daemon")
    path = tmp_path / "rsa.key"
    p2p_daemon.P2P.generate_identity(str(path))
    with pytest.raises(KeyFormatError, match="RSA.*Ed25519"):
        Identity.load_or_create(path)


async def test_p2pd_derives_the_same_peer_id_from_our_key_file(tmp_path) -> None:
    p2p_module = pytest.importorskip("hivemind.p2p")
    path = tmp_path / "identity.key"
    identity = Identity.load_or_create(path)
    p2p = await p2p_module.P2P.create(identity_path=str(path), host_maddrs=["/ip4/127.0.0.1/tcp/0"])
    try:
        assert p2p.peer_id.to_base58() == identity.peer_id
    finally:
        await p2p.shutdown()
