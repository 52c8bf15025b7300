"""The SDK loads a store's head and tokenizer once per process (swarmlm/client_parts.py)."""

import os

from shards.pack import pack
from shards.store import ShardStore
from swarmlm import client_parts

from .tiny import make_tiny_model


def test_connections_to_one_store_share_its_head_until_the_store_changes(tmp_path, monkeypatch):
    monkeypatch.setattr(client_parts, "_parts", type(client_parts._parts)())
    a, b = tmp_path / "a", tmp_path / "b"
    pack(make_tiny_model("llama-gqa-tied", tmp_path / "hf"), a)
    pack(tmp_path / "hf", b, dtype="bfloat16")  # another root
    head, tokenizer = client_parts.head_and_tokenizer(ShardStore(a), "cpu")
    assert tokenizer is None  # the tiny store packs none
    assert client_parts.head_and_tokenizer(ShardStore(a), "cpu")[0] is head  # a second connect
    head_file = ShardStore(a).path / ShardStore(a).manifest.head.file
    stat = head_file.stat()
    os.utime(head_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))  # the head file written again
    assert client_parts.head_and_tokenizer(ShardStore(a), "cpu")[0] is not head
    other = client_parts.head_and_tokenizer(ShardStore(b), "cpu")[0]
    assert other is not head and len(client_parts._parts) == client_parts.KEPT  # the oldest went
