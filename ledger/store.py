"""The ledger file: SQLite in WAL mode, append-only by trigger, written by one worker thread.

`Ledger` reads (entries, checkpoints, proofs, queries). `Store` adds the writer: callers submit
jobs (usually an append) to a queue and get a Future; one worker thread commits whatever is
queued in one transaction, signs one checkpoint for the batch, and only then resolves the
futures, so an entry is acknowledged exactly when it is durable. The serving path never waits
on disk. Interior hashes of perfect subtrees are stored as leaves complete them, so proofs at
millions of entries need only O(log n) look-ups.

When the disk fails (full, I/O errors, read-only), no entry is lost silently. A batch that cannot
commit stays queued, in order, and the writer retries it with backoff (RETRY_MIN doubling to
RETRY_MAX) until the disk takes it; its futures then resolve, late but never with an error. The
first failure of an episode is logged as an ERROR, the recovery as INFO, and `health()` reports
it, so the node can refuse sessions it could not record. Entries are given up only when more than
`max_pending` wait, or at `close()` when a last retry fails: their futures fail with StoreError and
their canonical bytes go, as JSON lines, to the side file `<ledger>.unwritten` (written out of a
reserve file kept beside the ledger, so even a full disk has room), or failing that to the log.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import queue
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ledger import canonical, entries, merkle
from ledger.checkpoint import log_key, sign_checkpoint, witness_key
from ledger.entries import Entry, LoadEntry, LogKeyEntry, ReceiptEntry, ServeEntry, WitnessEntry
from ledger.errors import StoreError
from ledger.keys import Identity

log = logging.getLogger(__name__)

FORMAT = "swarmlm-ledger/1"
PAGE = 2000
RETRY_MIN, RETRY_MAX = 0.05, 2.0  # seconds between attempts to commit a failed batch
RESERVE_BYTES = 256 << 10  # room kept beside the ledger for the side file of unwritten entries

_TABLES = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE entries (
    idx INTEGER PRIMARY KEY,
    entry BLOB NOT NULL,
    signature BLOB NOT NULL,
    leaf_hash BLOB NOT NULL,
    kind TEXT NOT NULL,
    time_ns INTEGER NOT NULL,
    node TEXT NOT NULL,
    manifest_root BLOB,
    block_start INTEGER,
    block_end INTEGER
);
CREATE INDEX entries_by_time ON entries (time_ns);
CREATE INDEX entries_by_model ON entries (manifest_root, block_start);
CREATE TABLE tree (level INTEGER, idx INTEGER, hash BLOB NOT NULL, PRIMARY KEY (level, idx)) WITHOUT ROWID;
CREATE TABLE checkpoints (size INTEGER PRIMARY KEY, note TEXT NOT NULL);
CREATE TABLE witnessed (peer TEXT PRIMARY KEY, size INTEGER NOT NULL, checkpoint TEXT NOT NULL,
                        time_ns INTEGER NOT NULL);
CREATE TABLE forks (id INTEGER PRIMARY KEY, peer TEXT NOT NULL, checkpoint_a TEXT NOT NULL,
                    checkpoint_b TEXT NOT NULL, reason TEXT NOT NULL, time_ns INTEGER NOT NULL);
"""
APPEND_ONLY_TABLES = ("meta", "entries", "tree", "checkpoints", "forks")
_TRIGGERS = "".join(
    f"CREATE TRIGGER {table}_no_{op.lower()} BEFORE {op} ON {table} "
    "BEGIN SELECT RAISE(ABORT, 'ledger is append-only'); END;\n"
    for table in APPEND_ONLY_TABLES
    for op in ("UPDATE", "DELETE")
)
_ROW = "idx, entry, signature, leaf_hash, kind, time_ns, node, manifest_root, block_start, block_end"


def default_paths() -> list[Path]:
    """Where a ledger is looked for, in order: $SWARMLM_LEDGER, else a node's then a shared one under $SWARMLM_HOME."""
    if os.environ.get("SWARMLM_LEDGER"):
        return [Path(os.environ["SWARMLM_LEDGER"])]
    home = Path(os.environ.get("SWARMLM_HOME") or Path.home() / ".cache" / "swarmlm")
    return [home / "node" / "ledger.sqlite", home / "ledger.sqlite"]


def default_path() -> Path:
    """The first existing ledger of `default_paths`; FileNotFoundError names every place tried."""
    tried = default_paths()
    for path in tried:
        if path.exists():
            return path
    raise FileNotFoundError(f"no ledger found (tried {', '.join(map(str, tried))}); pass --ledger PATH")


def index_columns(entry: Entry, owner: str) -> tuple[str, int, str, bytes | None, int | None, int | None]:
    """The searchable columns stored beside an entry: kind, time, the node it is about, model, blocks."""
    node, root, blocks = owner, None, (None, None)
    if isinstance(entry, (LoadEntry, ServeEntry)):
        root, blocks = entry.manifest_root, entry.blocks
    elif isinstance(entry, ReceiptEntry):
        node, root, blocks = entry.receipt.node, entry.receipt.manifest_root, entry.receipt.blocks
    elif isinstance(entry, WitnessEntry):
        node = entry.peer
    return entry.kind, entry.time_ns, node, root, blocks[0], blocks[1]


@dataclass(frozen=True)
class Row:
    """An entry as stored: its bytes, signature, leaf hash and searchable columns, unchecked."""

    index: int
    data: bytes
    signature: bytes
    leaf_hash: bytes
    columns: tuple[Any, ...]

    def decode(self) -> Entry:
        return entries.decode(self.data)[1]


def _row(r: tuple[Any, ...]) -> Row:
    return Row(r[0], r[1], r[2], r[3], r[4:])


def _connect(path: Path) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=60)
        conn.execute("PRAGMA busy_timeout = 60000")
    except sqlite3.Error as e:
        raise StoreError(f"cannot open ledger {path}: {e}") from None
    return conn


def _read_meta(conn: sqlite3.Connection, path: Path) -> dict[str, str]:
    try:
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    except sqlite3.DatabaseError as e:
        raise StoreError(f"{path} is not a SwarmLM ledger ({e}); check the --ledger path") from None
    if meta.get("format") != FORMAT or "peer_id" not in meta:
        raise StoreError(f"{path} is not a {FORMAT} file; check the --ledger path")
    return meta


class Ledger:
    """Read access to a ledger file, safe to share between threads."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise StoreError(f"no ledger at {self.path}; pass --ledger PATH or set SWARMLM_LEDGER")
        self._lock = threading.Lock()
        self._conn = _connect(self.path)
        try:
            self._conn.execute("PRAGMA query_only = ON")
            self.peer_id = _read_meta(self._conn, self.path)["peer_id"]
        except BaseException:
            self._conn.close()
            raise

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._conn.close()

    @contextmanager
    def snapshot(self) -> Iterator[Ledger]:
        """Every read in the block sees one state of the file (a WAL read transaction), however
        much the writer appends and checkpoints meanwhile."""
        self._all("BEGIN")
        try:
            yield self
        finally:
            self._all("COMMIT")

    def _all(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._conn.execute(sql, params).fetchall()
            except sqlite3.DatabaseError as e:
                raise StoreError(f"cannot read ledger {self.path}: {e}") from None

    def size(self) -> int:
        return self._all("SELECT coalesce(max(idx), -1) + 1 FROM entries")[0][0]

    def _pages(self, sql: str, params: tuple[Any, ...], start: int) -> Iterator[tuple[Any, ...]]:
        """Rows of `sql` a page at a time; its last two parameters are the first key and a limit."""
        while True:
            page = self._all(sql, (*params, start, PAGE))
            yield from page
            if len(page) < PAGE:
                return
            start = page[-1][0] + 1

    def rows(self, start: int = 0, end: int | None = None) -> Iterator[Row]:
        """Stored rows with start <= index < end, in index order."""
        stop = (1 << 63) - 1 if end is None else end
        sql = f"SELECT {_ROW} FROM entries WHERE idx < ? AND idx >= ? ORDER BY idx LIMIT ?"
        return map(_row, self._pages(sql, (stop,), start))

    def row(self, index: int) -> Row:
        found = list(self.rows(index, index + 1))
        if not found:
            raise StoreError(f"no entry {index}: the ledger has entries 0 to {self.size() - 1}")
        return found[0]

    def tree_nodes(self, level: int) -> Iterator[tuple[int, bytes]]:
        """Stored interior hashes of one level, in index order."""
        sql = "SELECT idx, hash FROM tree WHERE level = ? AND idx >= ? ORDER BY idx LIMIT ?"
        return self._pages(sql, (level,), 0)  # type: ignore[return-value]

    def tree_node_count(self) -> int:
        return self._all("SELECT count(*) FROM tree")[0][0]

    def checkpoints(self) -> Iterator[tuple[int, str]]:
        """Every stored (tree size, signed checkpoint), smallest first."""
        return self._pages("SELECT size, note FROM checkpoints WHERE size >= ? ORDER BY size LIMIT ?", (), 0)  # type: ignore[return-value]

    def latest_checkpoint(self) -> tuple[int, str]:
        found = self._all("SELECT size, note FROM checkpoints ORDER BY size DESC LIMIT 1")
        if not found:
            raise StoreError(f"{self.path} has no signed checkpoint yet")
        return found[0]

    def perfect(self, level: int, index: int) -> bytes:
        """Hash of the perfect subtree over leaves [index << level, (index + 1) << level)."""
        if level == 0:
            found = self._all("SELECT leaf_hash FROM entries WHERE idx = ?", (index,))
        else:
            found = self._all("SELECT hash FROM tree WHERE level = ? AND idx = ?", (level, index))
        if not found:
            raise StoreError(f"{self.path} lacks tree node ({level}, {index}); run `ledger verify`")
        return found[0][0]

    def _check_size(self, size: int) -> None:
        if not 0 < size <= self.size():
            raise StoreError(f"tree size {size} is not between 1 and the ledger's {self.size()} entries")

    def root(self, size: int) -> bytes:
        self._check_size(size)
        return merkle.range_hash(0, size, self.perfect)

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        self._check_size(size)
        if not 0 <= index < size:
            raise StoreError(f"entry {index} is not in a tree of size {size}")
        return merkle.inclusion_proof_from(index, size, self.perfect)

    def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        self._check_size(size2)
        if not 0 < size1 <= size2:
            raise StoreError(f"no consistency proof from size {size1} to size {size2}")
        return merkle.consistency_proof_from(size1, size2, self.perfect)

    def query(
        self,
        *,
        kind: str | None = None,
        model: bytes | None = None,
        block: int | None = None,
        node: str | None = None,
        since_ns: int | None = None,
        until_ns: int | None = None,
        last: int | None = None,
    ) -> list[Row]:
        """Rows matching every given filter, in index order; `last` keeps only the newest N.

        `node` is the node an entry is about: the log's owner for its own load and serve entries,
        the serving node of a client's receipt, the witnessed peer of a witness entry.
        """
        where, params = ["1"], []
        for clause, value in (
            ("kind = ?", kind),
            ("manifest_root = ?", model),
            ("block_start <= ? AND ? < block_end", block),
            ("node = ?", node),
            ("time_ns >= ?", since_ns),
            ("time_ns < ?", until_ns),
        ):
            if value is not None:
                where.append(clause)
                params.extend([value] * clause.count("?"))
        sql = f"SELECT {_ROW} FROM entries WHERE {' AND '.join(where)} ORDER BY idx DESC"
        if last is not None:
            sql += f" LIMIT {int(last)}"
        return [_row(r) for r in reversed(self._all(sql, tuple(params)))]

    def witnessed(self, peer: str) -> tuple[int, str] | None:
        """The latest checkpoint of `peer` this node checked: (tree size, signed note)."""
        found = self._all("SELECT size, checkpoint FROM witnessed WHERE peer = ?", (peer,))
        return found[0] if found else None

    def forks(self) -> list[tuple[str, str, str, str, int]]:
        """Recorded fork evidence: (peer, checkpoint a, checkpoint b, reason, time_ns)."""
        return self._all("SELECT peer, checkpoint_a, checkpoint_b, reason, time_ns FROM forks ORDER BY id")


T = TypeVar("T")
Job = Callable[["Transaction"], T]
_STOP = object()


def unwritten_path(path: str | os.PathLike[str]) -> Path:
    """The side file where a ledger's given-up entries go: one JSON object per line."""
    return Path(f"{path}.unwritten")


def _unwritten_line(entry: Entry) -> str:
    """An entry that never got an index: its kind, time and canonical bytes (without an index)."""
    data = canonical.pack({"kind": entry.kind, **entry.to_wire()})
    return json.dumps({"kind": entry.kind, "time_ns": entry.time_ns, "entry": data.hex()}) + "\n"


@dataclass(frozen=True)
class Health:
    """Whether the writer is committing, and what it holds back: for node status and metrics."""

    ok: bool  # False from a failed commit until the next one succeeds
    pending: int  # jobs (mostly appends) submitted and not yet committed
    failures: int  # failed commit attempts since the store opened
    unwritten: int  # entries given up to the side file (or the log) since the store opened
    last_error: str | None  # why the latest commit attempt failed


@dataclass(frozen=True)
class _Queued:
    run: Job[Any]
    future: Future[Any]
    entry: Entry | None  # what `append` queued, so a given-up entry can still be written out


class Transaction:
    """What a job may do inside the worker's batch transaction: append entries, write tables."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.conn = store._writer

    def append(self, entry: Entry) -> int:
        """Sign and insert `entry` at the next index; returns that index."""
        store = self._store
        index = store._frontier.size
        entries.check_in_log(index, entry, store.peer_id, store._log_keys)
        data = entries.encode(index, entry)
        leaf = merkle.leaf_hash(data)
        self.conn.execute(
            f"INSERT INTO entries ({_ROW}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (index, data, entries.sign(store.identity, data), leaf, *index_columns(entry, store.peer_id)),
        )
        self.conn.executemany("INSERT INTO tree (level, idx, hash) VALUES (?, ?, ?)", store._frontier.append(leaf))
        if isinstance(entry, LogKeyEntry):
            store._log_keys = entry
        return index


class Store(Ledger):
    """The single writer of a node's ledger; creates the file, and its entry 0, on first use."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        identity: Identity,
        *,
        max_batch: int = 4096,
        max_pending: int = 100_000,
        time_ns: int | None = None,
    ) -> None:
        """Open (or create) the ledger at `path`; `time_ns` stamps entry 0 of a new one."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.identity = identity
        self._guard = threading.Lock()  # the closed flag and the health counters
        self._closed = False
        self._ok, self._failures, self._unwritten, self._last_error = True, 0, 0, None
        self._reserve = Path(f"{path}.reserve")
        self._writer = _connect(path)
        try:
            self._writer.execute("PRAGMA journal_mode = WAL")
            self._writer.execute("PRAGMA synchronous = FULL")
            self._create()
        except sqlite3.DatabaseError as e:
            self._writer.close()
            raise StoreError(f"{path} is not a SwarmLM ledger ({e}); check the --ledger path") from None
        try:
            super().__init__(path)
        except BaseException:
            self._writer.close()
            raise
        try:
            if self.peer_id != identity.peer_id:
                raise StoreError(f"{path} is the ledger of {self.peer_id}, not of this identity {identity.peer_id}")
            self._frontier = merkle.Frontier.at(self.size(), self.perfect)
            self._log_keys = self._read_log_keys()
            if self._frontier.size == 0:
                self._write_log_keys(time.time_ns() if time_ns is None else time_ns)
        except BaseException:
            super().close()
            self._writer.close()
            raise
        self._max_batch, self._max_pending = max_batch, max_pending
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._backlog: deque[_Queued] = deque()  # taken from the queue, not committed yet (writer only)
        self._make_reserve()
        self._worker = threading.Thread(target=self._run, name=f"ledger-writer:{path.name}", daemon=True)
        self._worker.start()

    def _read_log_keys(self) -> LogKeyEntry | None:
        if self._frontier.size == 0:
            return None
        entry = self.row(0).decode()
        if not isinstance(entry, LogKeyEntry):
            raise StoreError(f"{self.path} does not start with a log_key entry; run `ledger verify`")
        return entry

    def _write_log_keys(self, time_ns: int) -> None:
        """Entry 0 of a new ledger, committed before the worker starts: a disk that cannot take it
        is an error of opening, not a retry."""
        log_keys = LogKeyEntry(
            log_key=log_key(self.identity).public_key().public_bytes_raw(),
            witness_key=witness_key(self.identity).public_key().public_bytes_raw(),
            time_ns=time_ns,
        )
        first = _Queued(lambda tx: tx.append(log_keys), Future(), log_keys)
        first.future.set_running_or_notify_cancel()
        error = self._commit([first])
        if error is not None:
            raise StoreError(f"cannot write the first entry of {self.path}: {error}")
        first.future.result()

    def _create(self) -> None:
        """Lay out an empty ledger; the check and the tables share one transaction."""
        self._writer.execute("BEGIN IMMEDIATE")
        try:
            if not self._writer.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall():
                for statement in (_TABLES + _TRIGGERS).split(";\n"):
                    if statement.strip():
                        self._writer.execute(statement)
                meta = [("format", FORMAT), ("peer_id", self.identity.peer_id)]
                self._writer.executemany("INSERT INTO meta VALUES (?, ?)", meta)
            self._writer.execute("COMMIT")
        finally:
            if self._writer.in_transaction:
                self._writer.execute("ROLLBACK")

    def submit(self, job: Job[T]) -> Future[T]:
        """Run `job` on the worker inside the next batch transaction; never blocks.

        The future resolves with the job's result once the batch is committed, or with its
        exception (the job's writes are then rolled back, the rest of the batch is unaffected).
        While the disk fails it waits; it fails with StoreError only if the job is given up.
        """
        return self._submit(job, None)

    def _submit(self, job: Job[T], entry: Entry | None) -> Future[T]:
        future: Future[T] = Future()
        with self._guard:
            if self._closed:
                raise StoreError(f"the ledger {self.path} is closed")
            self._queue.put(_Queued(job, future, entry))
        return future

    def append(self, entry: Entry) -> Future[int]:
        """Queue `entry`; the future gives its index once it is committed (acknowledged)."""
        return self._submit(lambda tx: tx.append(entry), entry)

    def append_sync(self, entry: Entry, timeout: float | None = None) -> int:
        """Append and wait until committed: for CLIs and tests, not the serving path."""
        return self.append(entry).result(timeout)

    def health(self) -> Health:
        """The writer's state now; cheap enough for every session open and every scrape."""
        with self._guard:
            pending = self._queue.qsize() + len(self._backlog)
            return Health(self._ok, pending, self._failures, self._unwritten, self._last_error)

    def close(self) -> None:
        """Commit what is queued, stop the worker and close the file.

        If the disk still fails after one last try, the waiting entries are given up (side file)."""
        with self._guard:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        self._worker.join()
        self._writer.close()
        super().close()

    # ---- the writer thread ------------------------------------------------------------------------

    def _run(self) -> None:
        delay, retry_at, stopping = RETRY_MIN, 0.0, False
        while True:
            if not stopping:
                stopping = self._take(None if not self._backlog else max(0.0, retry_at - time.monotonic()))
            if not self._backlog:
                if stopping:
                    return
                continue
            if not stopping and time.monotonic() < retry_at:
                continue
            batch = list(itertools.islice(self._backlog, self._max_batch))
            error = self._commit(batch, from_backlog=True)
            if error is None:
                delay, retry_at = RETRY_MIN, 0.0
                continue
            self._failed(error)
            if stopping:
                self._give_up(list(self._backlog), f"the ledger was closed while {error}")
                self._backlog.clear()
                return
            retry_at, delay = time.monotonic() + delay, min(delay * 2, RETRY_MAX)

    def _take(self, wait: float | None) -> bool:
        """Move queued jobs to the backlog, waiting up to `wait` seconds for the first (None: for
        ever); True once `close` was called."""
        taken = []
        try:
            taken.append(self._queue.get(timeout=wait))
            while True:
                taken.append(self._queue.get_nowait())
        except queue.Empty:
            pass
        overflow = []
        for item in taken:
            if item is _STOP or not item.future.set_running_or_notify_cancel():  # or cancelled by its caller
                continue
            if len(self._backlog) < self._max_pending:
                self._backlog.append(item)
            else:
                overflow.append(item)
        if overflow:
            self._give_up(overflow, f"{self._max_pending} entries already wait for the disk")
        return _STOP in taken

    def _commit(self, batch: list[_Queued], from_backlog: bool = False) -> Exception | None:
        """Run `batch` in one transaction and settle its futures (health first, so a caller woken
        by its future sees it: `from_backlog`, the batch leaves the backlog's head, so it no longer
        counts as pending); on failure roll everything back, leave the futures pending and return
        the error."""
        conn, before = self._writer, (self._frontier.copy(), self._log_keys)
        outcomes: list[tuple[Future[Any], bool, Any]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            stored = conn.execute("SELECT coalesce(max(idx), -1) + 1 FROM entries").fetchone()[0]
            if stored != self._frontier.size:
                raise StoreError(f"another process has written to {self.path}; only one node may use a ledger")
            tx = Transaction(self)
            outcomes = [(job.future, *self._run_job(job.run, tx)) for job in batch]
            if self._frontier.size != before[0].size:
                note = sign_checkpoint(self.identity, self._frontier.size, self._frontier.root())
                conn.execute("INSERT INTO checkpoints (size, note) VALUES (?, ?)", (self._frontier.size, note))
            conn.execute("COMMIT")
        except Exception as e:  # the whole batch failed: nothing in it is acknowledged
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error as rollback:
                    log.warning("ledger %s: rollback failed: %s", self.path, rollback)
            self._frontier, self._log_keys = before
            return e
        self._recovered()
        if from_backlog:
            for _ in batch:
                self._backlog.popleft()
        for future, ok, value in outcomes:
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
        return None

    def _run_job(self, job: Job[Any], tx: Transaction) -> tuple[bool, Any]:
        """Run one job under a savepoint, so its failure undoes only its own writes; a failure of
        the disk (not the job) fails the whole batch, to be retried."""
        saved = (self._frontier.copy(), self._log_keys)
        tx.conn.execute("SAVEPOINT job")
        try:
            result = job(tx)
        except sqlite3.OperationalError:
            raise
        except Exception as e:
            tx.conn.execute("ROLLBACK TO job")
            tx.conn.execute("RELEASE job")
            self._frontier, self._log_keys = saved
            return False, e
        tx.conn.execute("RELEASE job")
        return True, result

    def _failed(self, error: Exception) -> None:
        with self._guard:
            first, self._ok = self._ok, False
            self._failures += 1
            self._last_error = f"{type(error).__name__}: {error}"
        if first:
            log.error(
                "ledger %s cannot commit (%s): %d entries wait and are retried until the disk takes them; "
                "new sessions are refused meanwhile. Free space on the disk holding the ledger.",
                self.path, error, len(self._backlog),
            )
        else:
            log.debug("ledger %s: commit retry failed: %s", self.path, error)

    def _recovered(self) -> None:
        with self._guard:
            was_failing, self._ok = not self._ok, True
        if was_failing:
            log.info("ledger %s commits again after %d failed attempts; no entry was lost", self.path, self._failures)
            self._make_reserve()

    def _give_up(self, jobs: list[_Queued], reason: str) -> None:
        """Fail `jobs` loudly: their entries go to the side file (or the log), their futures fail."""
        lines = [_unwritten_line(job.entry) for job in jobs if job.entry is not None]
        side = unwritten_path(self.path)
        where = self._write_unwritten(side, lines)
        log.error(
            "ledger %s: %d entries and %d other jobs NOT committed (%s); %s",
            self.path, len(lines), len(jobs) - len(lines), reason, where,
        )
        with self._guard:
            self._unwritten += len(lines)
        for job in jobs:
            job.future.set_exception(StoreError(f"not committed to {self.path}: {reason}; see {side}"))

    def _write_unwritten(self, side: Path, lines: list[str]) -> str:
        """Append `lines` to the side file, using the reserve's room; returns where they went."""
        if not lines:
            return "no entry needed writing out"
        try:
            self._reserve.unlink(missing_ok=True)
            with open(side, "a") as f:
                f.write("".join(lines))
                f.flush()
                os.fsync(f.fileno())
            return f"their bytes are in {side}"
        except OSError as e:
            for line in lines:
                log.error("unwritten ledger entry: %s", line.rstrip())
            return f"{side} could not be written ({e}), so their bytes are in this log"

    def _make_reserve(self) -> None:
        """Keep RESERVE_BYTES allocated beside the ledger, so a full disk still has room for the side file."""
        try:
            with open(self._reserve, "ab") as f:
                if os.fstat(f.fileno()).st_size < RESERVE_BYTES:
                    os.posix_fallocate(f.fileno(), 0, RESERVE_BYTES)
        except OSError as e:
            log.warning("cannot reserve room beside the ledger at %s (%s); on a full disk, entries that cannot "
                        "be committed will be written to the log only", self._reserve, e)
