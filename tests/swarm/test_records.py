"""DHT announcements are signed by the peer they name: no one can forge or overwrite another's."""

from __future__ import annotations

import dataclasses

from hivemind.dht import DHT
import msgpack
from hivemind.dht.validation import DHTRecord
from hivemind.utils import MSGPackSerializer, get_dht_time

from ledger import keys
from ledger.keys import Identity
from routing import dht as dht_io
from routing.records import VERIFIED_BYTES, ServerRecord, SignedRecordValidator, block_key


def _record(owner: str, value: dict) -> DHTRecord:
    return DHTRecord(b"k" * 20, MSGPackSerializer.dumps(owner), MSGPackSerializer.dumps(value), get_dht_time() + 60)


class ForgingValidator(SignedRecordValidator):
    """An attacker's validator: signs any record with its own key, whoever the subkey names."""

    def sign_value(self, record: DHTRecord) -> bytes:
        signature = Identity(self._seed).sign(keys.DHT_RECORD, self._message(record, record.value))
        return msgpack.packb([record.value, signature], use_bin_type=True)


def test_validator_accepts_the_owners_signature_only():
    owner, other = Identity.generate(), Identity.generate()
    record = _record(owner.peer_id, {"state": "online"})
    signed = dataclasses.replace(record, value=SignedRecordValidator(owner.seed).sign_value(record))
    reader = SignedRecordValidator()
    assert reader.validate(signed)
    assert reader.strip_value(signed) == record.value

    forged = dataclasses.replace(record, value=ForgingValidator(other.seed).sign_value(record))
    assert not reader.validate(forged)
    # A validator never signs for someone else: the record stays unsigned and is refused.
    assert SignedRecordValidator(other.seed).sign_value(record) == record.value
    assert not reader.validate(record)
    tampered = dataclasses.replace(signed, value=signed.value.replace(b"online", b"draine"))
    assert not reader.validate(tampered)
    later = dataclasses.replace(signed, expiration_time=signed.expiration_time + 3600)
    assert not reader.validate(later)  # the expiration is signed too: no replay with a longer life


def test_validator_checks_a_signature_once_and_never_remembers_a_forgery(monkeypatch):
    """A lookup receives a record from every peer holding its key: the signature is checked once; any
    other bytes (or expiry) are checked afresh, and a refused record is refused again."""
    owner = Identity.generate()
    record = _record(owner.peer_id, {"state": "online"})
    signed = dataclasses.replace(record, value=SignedRecordValidator(owner.seed).sign_value(record))
    checks, verify = [], keys.verify

    def counted(*args):
        checks.append(args)
        return verify(*args)

    monkeypatch.setattr(keys, "verify", counted)
    reader = SignedRecordValidator()
    assert all(reader.validate(signed) for _ in range(5))
    assert len(checks) == 1
    later = dataclasses.replace(signed, expiration_time=signed.expiration_time + 1)
    assert not reader.validate(later) and not reader.validate(later)
    assert len(checks) == 3
    assert reader.validate(signed) and len(checks) == 3

    # a big valid value (anyone can sign one with a free key) is checked every time, never held
    big = _record(owner.peer_id, {"note": "x" * VERIFIED_BYTES})
    big = dataclasses.replace(big, value=SignedRecordValidator(owner.seed).sign_value(big))
    assert reader.validate(big) and reader.validate(big)
    assert len(checks) == 5


def test_a_second_peer_cannot_overwrite_a_nodes_record(swarm3, remote_model):
    victim = next(n for n in swarm3.nodes if n.blocks == (0, 10))
    attacker = Identity.generate()
    dht = DHT(initial_peers=swarm3.initial_peers, start=True, client_mode=False,
                       record_validators=[ForgingValidator(attacker.seed)])
    try:
        forged = ServerRecord(peer_id=victim.peer_id, state="offline", start=0, end=30, throughput=1e9,
                              dtype="float32", device="cpu", cache_tokens_left=0, version=1, name="evil")
        stored = dht.store(block_key(remote_model.root, 0), forged.to_value(), get_dht_time() + 60,
                           subkey=victim.peer_id)
        assert not stored
        seen = remote_model.client.run(dht_io.fetch_records(remote_model.client.dht, remote_model.root, 30))
        genuine = seen[victim.peer_id]
        assert (genuine.state, genuine.start, genuine.end, genuine.name) == ("online", 0, 10, victim.name)
    finally:
        dht.shutdown()
