"""`swarmlm ledger ...`: the operator's view of a ledger: read, query, verify, prove.

`register(subparsers)` adds the command group to the project's CLI; every handler returns an
exit code (0 ok, 1 verification failed) and raises LedgerError for what the user must fix.
`python -m ledger.cli ledger ...` runs the same commands on their own.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import re
import sys
import time
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ledger import canonical
from ledger.entries import KINDS, Entry, ReceiptEntry, ServeEntry
from ledger.errors import LedgerError, UsageError, VerifyError
from ledger.proofs import check_inclusion_proof, make_inclusion_proof
from ledger.store import Ledger, Row, default_path
from ledger.verify import verify_ledger

_RELATIVE = re.compile(r"(\d+)([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_time(text: str, now: datetime | None = None) -> int:
    """Unix nanoseconds from ISO-8601 (local time if no zone) or a relative age like 12h or 7d."""
    now = now or datetime.now().astimezone()
    match = _RELATIVE.fullmatch(text.strip())
    if match:
        moment = now - timedelta(**{_UNITS[match[2]]: int(match[1])})
    else:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise UsageError(
                f"time {text!r} is neither ISO-8601 (2025-01-31T22:00) nor relative (12h, 30m, 7d)"
            ) from None
        if moment.tzinfo is None:
            moment = moment.astimezone()
    return round(moment.timestamp() * 1_000_000) * 1000


def _hex_digest(text: str) -> bytes:
    try:
        value = bytes.fromhex(text)
    except ValueError:
        value = b""
    if len(value) != 32:
        raise UsageError(f"{text!r} is not a 64-character hex manifest root")
    return value


def _jsonable(value: Any) -> Any:
    """Decoded msgpack for JSON: bytes become hex."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def _row_json(row: Row) -> dict[str, Any]:
    return {
        "entry": _jsonable(canonical.unpack(row.data)),
        "signature": row.signature.hex(),
        "leaf_hash": row.leaf_hash.hex(),
    }


def _when(time_ns: int) -> str:
    return datetime.fromtimestamp(time_ns / 1e9).strftime("%Y-%m-%d %H:%M:%S")


def _console(wide: bool = False) -> Console:
    """Rich output at the terminal's width, or wide enough not to wrap when piped; with `wide`, never cut."""
    if wide:
        return Console(width=100_000)  # whole IDs on one line each, for pasting; the terminal folds them
    return Console() if sys.stdout.isatty() else Console(width=200)


class _Ids:
    """How IDs show in a table: cut to tell rows apart at a glance, or whole (`--wide`) to paste."""

    def __init__(self, wide: bool) -> None:
        self.wide = wide

    def short(self, text: str | None, keep: int = 12) -> str:
        return "" if text is None else text if self.wide or len(text) <= keep + 1 else text[:keep] + "…"

    def peer(self, peer_id: str) -> str:
        """Peer IDs all start 12D3KooW; their tail tells them apart."""
        return peer_id if self.wide else "…" + peer_id[-10:]


def _details(wire: dict[str, Any], ids: _Ids) -> str:
    kind = wire["kind"]
    if kind == "load":
        return f"{len(wire['shard_digests'])} shards on {wire['device']} as {wire['dtype']}"
    if kind == "serve":
        receipt = "receipted" if wire["receipt"] else "UNRECEIPTED"
        return (f"session {ids.short(wire['session'])} client {ids.peer(wire['client'])} {wire['tokens']} tokens "
                f"{receipt}")
    if kind == "receipt":
        return f"session {ids.short(wire['receipt']['session'])} {wire['receipt']['tokens']} tokens"
    if kind == "witness":
        return wire["checkpoint"].split("\n")[1] + " entries cosigned"
    if kind == "log_key":
        return "log key " + wire["log_key"].hex()[:16] + "…"
    return ""


def _print_rows(rows: Iterable[Row], as_json: bool, console: Console, wide: bool = False) -> None:
    if as_json:
        for row in rows:
            print(json.dumps({"index": row.index, **_row_json(row)}), flush=True)
        return
    table = Table(box=None)
    for column in ("index", "time", "kind", "node", "model", "blocks"):
        table.add_column(column, no_wrap=True)
    table.add_column("details", no_wrap=wide)
    ids = _Ids(wide)
    for row in rows:
        wire = canonical.unpack(row.data)
        _, _, node, root, start, end = row.columns
        blocks = "" if start is None else f"[{start}, {end})"
        table.add_row(
            str(row.index),
            _when(wire["time_ns"]),
            wire["kind"],
            ids.peer(node),
            ids.short(root and root.hex()),
            blocks,
            _details(wire, ids),
        )
    console.print(table)


def _ledger_path(args: argparse.Namespace) -> Path:
    if args.ledger:
        return Path(args.ledger)
    try:
        return default_path()
    except FileNotFoundError as e:
        raise LedgerError(str(e)) from None


def _tail(args: argparse.Namespace) -> int:
    console = _console(args.wide)
    with Ledger(_ledger_path(args)) as ledger:
        rows = ledger.query(last=args.n)
        _print_rows(rows, args.json, console, args.wide)
        after = rows[-1].index + 1 if rows else 0
        try:
            while args.follow:
                time.sleep(args.interval)
                new = list(ledger.rows(after))
                if new:
                    _print_rows(new, args.json, console, args.wide)
                    after = new[-1].index + 1
        except KeyboardInterrupt:
            pass
    return 0


def _show(args: argparse.Namespace) -> int:
    with Ledger(_ledger_path(args)) as ledger:
        row = ledger.row(args.index)
    document = {"index": row.index, **_row_json(row)}
    if args.json:
        print(json.dumps(document, indent=2))
    else:
        _console().print_json(json.dumps(document))
    return 0


def _query(args: argparse.Namespace) -> int:
    with Ledger(_ledger_path(args)) as ledger:
        rows = ledger.query(
            kind=args.kind,
            model=args.model and _hex_digest(args.model),
            block=args.block,
            node=args.node,
            since_ns=args.since and parse_time(args.since),
            until_ns=args.until and parse_time(args.until),
        )
    if args.session is not None:
        rows = [r for r in rows if _session_of(r.decode()) == args.session]
    if args.n is not None:
        rows = rows[-args.n:] if args.n > 0 else []
    _print_rows(rows, args.json, _console(args.wide), args.wide)
    return 0


def _session_of(entry: Entry) -> str | None:
    if isinstance(entry, ServeEntry):
        return entry.session
    if isinstance(entry, ReceiptEntry):
        return entry.receipt.session
    return None


def _verify(args: argparse.Namespace) -> int:
    path = Path(args.path) if args.path else _ledger_path(args)
    try:
        report = verify_ledger(path)
    except VerifyError as e:
        if args.json:
            print(json.dumps({"ok": False, "path": str(path), "first_bad_index": e.index, "error": str(e)}))
        print(f"verification FAILED for {path}: {e}", file=sys.stderr)
        return 1
    result = {
        "ok": True,
        "path": str(path),
        "peer_id": report.peer_id,
        "entries": report.size,
        "root": base64.b64encode(report.root).decode(),
        "checkpoints": report.checkpoints,
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"OK: {report.size} entries of {report.peer_id}, {report.checkpoints} checkpoints, root {result['root']}")
    return 0


def _prove(args: argparse.Namespace) -> int:
    with Ledger(_ledger_path(args)) as ledger:
        text = json.dumps(make_inclusion_proof(ledger, args.index), indent=2) + "\n"
    if args.out:
        Path(args.out).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def _check_proof(args: argparse.Namespace) -> int:
    try:
        text = Path(args.file).read_text()
    except OSError as e:
        raise UsageError(f"cannot read proof file: {e}") from None
    try:
        proven = check_inclusion_proof(json.loads(text), args.peer)
    except (LedgerError, ValueError) as e:
        print(f"proof INVALID: {e}", file=sys.stderr)
        return 1
    cp = proven.checkpoint
    if args.json:
        print(
            json.dumps(
                {
                    "ok": True,
                    "peer_id": proven.peer_id,
                    "index": proven.index,
                    "tree_size": cp.size,
                    "root": base64.b64encode(cp.root).decode(),
                    "entry": _jsonable(proven.entry.to_wire()),
                }
            )
        )
    else:
        print(
            f"OK: entry {proven.index} ({proven.entry.kind}) is in the log of {proven.peer_id}, "
            f"under its signed checkpoint of {cp.size} entries"
        )
    return 0


def _export(args: argparse.Namespace) -> int:
    target = open(args.out, "w") if args.out else contextlib.nullcontext(sys.stdout)
    with target as out, Ledger(_ledger_path(args)) as ledger:
        for row in ledger.rows():
            record = {"index": row.index, **_row_json(row), "data": base64.b64encode(row.data).decode()}
            out.write(json.dumps(record) + "\n")
    return 0


def register(subparsers: argparse._SubParsersAction) -> argparse._SubParsersAction:  # type: ignore[type-arg]
    """Add the `ledger` command group to a CLI's subparsers; returns the group's own subparsers, so
    a package with a network (which this one must not import) can add `ledger audit`."""
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument(
        "--ledger", metavar="PATH", help="ledger file (default: $SWARMLM_LEDGER, else a node's "
        "$SWARMLM_HOME/node/ledger.sqlite, else $SWARMLM_HOME/ledger.sqlite)"
    )
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="machine-readable output")
    common = [where, as_json]
    whole_ids = argparse.ArgumentParser(add_help=False)
    whole_ids.add_argument("--wide", action="store_true", help="whole session, peer and model IDs (to paste into "
                                                          "`query --session/--node/--model`)")
    group = subparsers.add_parser("ledger", help="inspect, query, verify and prove a node's or client's ledger")
    commands = group.add_subparsers(dest="ledger_command", required=True, metavar="COMMAND")

    p = commands.add_parser("tail", parents=[*common, whole_ids], help="show the newest entries")
    p.add_argument("-n", type=int, default=10, help="how many (default 10)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new entries")
    p.add_argument("--interval", type=float, default=0.5, help=argparse.SUPPRESS)
    p.set_defaults(func=_tail)

    p = commands.add_parser("show", parents=common, help="one entry in full")
    p.add_argument("index", type=int)
    p.set_defaults(func=_show)

    p = commands.add_parser("query", parents=[*common, whole_ids], help="entries matching every filter given")
    p.add_argument("--model", metavar="ROOT", help="manifest root (hex)")
    p.add_argument("--block", type=int, metavar="B", help="entries whose block range contains B")
    p.add_argument("--node", metavar="PEER", help="the serving (or witnessed) node's peer ID")
    p.add_argument("--kind", choices=sorted(KINDS))
    p.add_argument("--since", metavar="T", help="ISO-8601 time or age like 12h")
    p.add_argument("--until", metavar="T", help="ISO-8601 time or age like 12h")
    p.add_argument("--session", metavar="ID", help="serve and receipt entries of one inference session (the id "
                                                   "an answer's provenance names)")
    p.add_argument("-n", type=int, metavar="N", help="only the newest N matching entries")
    p.set_defaults(func=_query)

    p = commands.add_parser("verify", parents=common, help="check every signature, leaf and checkpoint offline")
    p.add_argument("path", nargs="?", metavar="PATH", help="ledger file (overrides --ledger)")
    p.set_defaults(func=_verify)

    p = commands.add_parser("prove", parents=[where], help="inclusion proof of entry N as JSON")
    p.add_argument("index", type=int, metavar="N")
    p.add_argument("--out", metavar="FILE", help="write to FILE instead of stdout")
    p.set_defaults(func=_prove)

    p = commands.add_parser("check-proof", parents=[as_json], help="verify a proof file offline")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--peer", metavar="PEER", help="require the proof to be about this node's log")
    p.set_defaults(func=_check_proof)

    p = commands.add_parser("export", parents=[where], help="every entry, one JSON object per line")
    p.add_argument("--jsonl", action="store_true", required=True, help="JSON Lines (the only format)")
    p.add_argument("--out", metavar="FILE", help="write to FILE instead of stdout")
    p.set_defaults(func=_export)
    return commands


def main(argv: list[str] | None = None) -> int:
    """Run the ledger commands standalone, with the project CLI's error convention."""
    parser = argparse.ArgumentParser(prog="python -m ledger.cli")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except LedgerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
