"""A real `swarmlm api` process over the shared 3-node swarm, clients for it, and the local oracle."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.api.gateway_process import run_gateway
from tests.waiting import until

API_KEY = "sk-swarmlm-test"
MODEL = "smollm2-135m-instruct"


@pytest.fixture(scope="session")
def gateway(swarm3, tmp_path_factory):
    """The gateway on swarm3, keyed through SWARMLM_API_KEY."""
    with run_gateway(swarm3.initial_peers, tmp_path_factory.mktemp("gateway"), api_key=API_KEY) as gw:
        yield gw


@pytest.fixture
def client(gateway):
    import openai

    return openai.OpenAI(base_url=gateway.base_url, api_key=API_KEY, max_retries=0, timeout=300)


@pytest.fixture
def async_client(gateway):
    import openai

    return openai.AsyncOpenAI(base_url=gateway.base_url, api_key=API_KEY, max_retries=0, timeout=300)


def serve_entry(ledger: str | Path, session: str, deadline_s: float = 60.0):
    """The `serve` entry a node logged for `session`, once its ledger writer (a background thread)
    has committed it."""
    from ledger.store import Ledger

    def entries() -> list:
        with Ledger(ledger) as log:
            return [e for e in (row.decode() for row in log.query(kind="serve")) if e.session == session]

    found = until(entries, timeout=deadline_s)
    assert found, f"no serve entry for session {session} in {ledger}"
    return found[0]
