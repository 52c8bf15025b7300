"""The Merkle code against the public RFC 6962 vectors and against the RFC's own definitions."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import merkle
from ledger.errors import ProofError

VECTORS = Path(__file__).resolve().parents[2].parent / "shared" / "testdata" / "rfc6962"


def _vector_files(kind: str) -> list:
    if not VECTORS.is_dir():
        if os.environ.get("CI"):  # CI must prove the vectors, not skip them
            raise FileNotFoundError(f"RFC 6962 vectors absent: {VECTORS}")
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"RFC 6962 vectors absent: {VECTORS}"))]
    files = sorted((VECTORS / kind).rglob("*.json"))
    return [pytest.param(f, id=str(f.relative_to(VECTORS / kind))) for f in files]


def _b64(value: str | None) -> bytes:
    return base64.b64decode(value or "")


def _proof(case: dict) -> list[bytes]:
    return [_b64(p) for p in case["proof"] or []]


def _outcome(check) -> bool:
    """True if the verifier accepted, False if it raised ProofError."""
    try:
        check()
    except ProofError:
        return False
    return True


@pytest.mark.parametrize("path", _vector_files("inclusion"))
def test_inclusion_vector_accepted_iff_valid(path: Path) -> None:
    case = json.loads(path.read_text())
    accepted = _outcome(
        lambda: merkle.verify_inclusion(
            case["leafIdx"], case["treeSize"], _b64(case["leafHash"]), _proof(case), _b64(case["root"])
        )
    )
    assert accepted is not case["wantErr"], case["desc"]


@pytest.mark.parametrize("path", _vector_files("consistency"))
def test_consistency_vector_accepted_iff_valid(path: Path) -> None:
    case = json.loads(path.read_text())
    accepted = _outcome(
        lambda: merkle.verify_consistency(
            case["size1"], case["size2"], _proof(case), _b64(case["root1"]), _b64(case["root2"])
        )
    )
    assert accepted is not case["wantErr"], case["desc"]


# --- A naive implementation, written straight from RFC 9162 §2.1.1, §2.1.3.1 and §2.1.4.1. ---


def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def naive_mth(d: list[bytes]) -> bytes:
    n = len(d)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + d[0]).digest()
    k = _k(n)
    return hashlib.sha256(b"\x01" + naive_mth(d[:k]) + naive_mth(d[k:])).digest()


def naive_path(m: int, d: list[bytes]) -> list[bytes]:
    n = len(d)
    if n == 1:
        return []
    k = _k(n)
    if m < k:
        return naive_path(m, d[:k]) + [naive_mth(d[k:])]
    return naive_path(m - k, d[k:]) + [naive_mth(d[:k])]


def naive_subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [naive_mth(d)]
    k = _k(n)
    if m <= k:
        return naive_subproof(m, d[:k], b) + [naive_mth(d[k:])]
    return naive_subproof(m - k, d[k:], False) + [naive_mth(d[:k])]


def naive_proof(m: int, d: list[bytes]) -> list[bytes]:
    return naive_subproof(m, d, True)


def _leaves(n: int) -> list[bytes]:
    return [i.to_bytes(4, "big") for i in range(n)]


@settings(max_examples=150, deadline=None)
@given(st.integers(min_value=0, max_value=300), st.data())
def test_optimised_tree_matches_rfc_definitions(n: int, data: st.DataObject) -> None:
    d = _leaves(n)
    hashes = [merkle.leaf_hash(x) for x in d]
    root = merkle.root_from_leaf_hashes(hashes)
    assert root == naive_mth(d)
    if n == 0:
        assert root == merkle.EMPTY_ROOT
        return
    m = data.draw(st.integers(min_value=0, max_value=n - 1), label="leaf index")
    proof = merkle.inclusion_proof(m, hashes)
    assert proof == naive_path(m, d)
    merkle.verify_inclusion(m, n, hashes[m], proof, root)
    size1 = data.draw(st.integers(min_value=1, max_value=n), label="size1")
    cproof = merkle.consistency_proof(size1, hashes)
    assert cproof == naive_proof(size1, d)
    merkle.verify_consistency(size1, n, cproof, naive_mth(d[:size1]), root)


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=2, max_value=200), st.data())
def test_any_altered_proof_is_rejected(n: int, data: st.DataObject) -> None:
    hashes = [merkle.leaf_hash(x) for x in _leaves(n)]
    root = merkle.root_from_leaf_hashes(hashes)
    m = data.draw(st.integers(min_value=0, max_value=n - 1))
    proof = merkle.inclusion_proof(m, hashes)
    for bad in (proof[:-1], proof + [root], [root] + proof):
        with pytest.raises(ProofError):
            merkle.verify_inclusion(m, n, hashes[m], bad, root)
    if proof:
        i = data.draw(st.integers(min_value=0, max_value=len(proof) - 1))
        flipped = list(proof)
        flipped[i] = bytes([flipped[i][0] ^ 1]) + flipped[i][1:]
        with pytest.raises(ProofError):
            merkle.verify_inclusion(m, n, hashes[m], flipped, root)
    size1 = data.draw(st.integers(min_value=1, max_value=n - 1))
    cproof = merkle.consistency_proof(size1, hashes)
    root1 = merkle.root_from_leaf_hashes(hashes[:size1])
    for bad in (cproof[:-1], cproof + [root], [root] + cproof):
        with pytest.raises(ProofError):
            merkle.verify_consistency(size1, n, bad, root1, root)
    with pytest.raises(ProofError):
        merkle.verify_consistency(size1, n, cproof, root, root1)


def test_size_zero_and_reversed_sizes_are_errors() -> None:
    with pytest.raises(ProofError):
        merkle.verify_consistency(0, 0, [], merkle.EMPTY_ROOT, merkle.EMPTY_ROOT)
    with pytest.raises(ProofError):
        merkle.verify_consistency(2, 1, [], merkle.EMPTY_ROOT, merkle.EMPTY_ROOT)
    with pytest.raises(ValueError):
        merkle.consistency_proof(0, [merkle.leaf_hash(b"x")])
    with pytest.raises(ValueError):
        merkle.inclusion_proof(1, [merkle.leaf_hash(b"x")])


@settings(max_examples=50, deadline=None)
@given(st.integers(min_value=0, max_value=200))
def test_frontier_tracks_the_root_and_completed_subtrees(n: int) -> None:
    hashes = [merkle.leaf_hash(x) for x in _leaves(n)]
    frontier, stored = merkle.Frontier(), {(0, i): h for i, h in enumerate(hashes)}
    for i, h in enumerate(hashes):
        for level, index, digest in frontier.append(h):
            assert digest == naive_mth(_leaves(n)[index << level : (index + 1) << level])
            stored[level, index] = digest
        assert frontier.root() == merkle.root_from_leaf_hashes(hashes[: i + 1])
    restored = merkle.Frontier.at(n, lambda level, index: stored[level, index])
    assert restored.hashes == frontier.hashes and restored.root() == frontier.root()
