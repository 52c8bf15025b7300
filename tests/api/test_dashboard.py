"""The dashboard in a real headless Chromium (Debian's `chromium`, driven by Playwright).

`make test` installs chromium where it runs as root; elsewhere these tests skip and say why.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import openai
import pytest

from ledger.proofs import check_inclusion_proof
from node.local_swarm import LocalSwarm
from tests.api.conftest import API_KEY, MODEL, serve_entry
from tests.api.gateway_process import run_gateway
from tests.conftest import FIXED_THROUGHPUT

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
LONG = [{"role": "user", "content": "Count from 1 to 300, separated by commas."}]
WAIT_MS = 120_000


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing: `make browser` installs Debian's chromium (needs root and apt-get)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is missing: pip install -e '.[test]'")
    with sync_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(  # a fresh profile, nothing fetched from outside
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=CHROMIUM, headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1400, "height": 1000})
        yield context
        context.close()


def _open(browser, url: str):
    """A page at `url` that records console errors and uncaught exceptions in `page.errors`."""
    page = browser.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.errors = errors
    page.goto(url)
    return page


def _servers_per_block(page) -> list[int]:
    return page.eval_on_selector_all(".block", "cells => cells.map(c => Number(c.dataset.servers))")


@pytest.fixture(scope="module")
def dashboard(browser, gateway):
    """The keyed gateway's dashboard, key entered as a user would."""
    page = _open(browser, gateway.url)
    page.wait_for_selector("#api-key", state="visible")
    page.fill("#api-key", API_KEY)
    page.press("#api-key", "Tab")  # `change` fires on leaving the field
    page.wait_for_selector(".block[data-servers]")
    yield page
    page.close()


def test_the_page_loads_cleanly_and_maps_every_block_covered(dashboard, swarm3):
    assert _servers_per_block(dashboard) == [1] * 30
    assert dashboard.is_hidden("#unserved") and "30/30 blocks covered" in dashboard.inner_text("#summary")
    rows = dashboard.eval_on_selector_all("#nodes tbody tr", "rows => rows.map(r => r.dataset.peer)")
    assert sorted(rows) == sorted(n.peer_id for n in swarm3.nodes)
    assert "3 of 3 nodes online" in dashboard.inner_text("#summary")
    for node in swarm3.nodes:  # by the public name its record gives
        assert dashboard.inner_text(f"#nodes tr[data-peer='{node.peer_id}'] td").startswith(node.name)
    dashboard.wait_for_function(  # every node's checkpoint fetched and verified through the ledger RPC
        "() => [...document.querySelectorAll('#nodes tbody tr')].every(r => r.innerText.includes('entries ✓'))",
        timeout=WAIT_MS)
    assert dashboard.errors == []


def test_the_chat_box_streams_an_answer_with_its_provenance(dashboard, local_model, swarm3, default_store):
    dashboard.evaluate("""() => {  // count how often the answer grows: streamed text grows token by token
        window.updates = 0;
        new MutationObserver(() => window.updates++).observe(document.getElementById('chat-log'),
                                                             {subtree: true, characterData: true, childList: true});
    }""")
    dashboard.fill("#chat-input", LONG[0]["content"])
    dashboard.fill("#temperature", "0")
    dashboard.fill("#max-tokens", "40")
    dashboard.click("#chat-send")
    dashboard.wait_for_selector(".answer[data-done]", timeout=WAIT_MS)
    assert dashboard.get_attribute(".answer", "data-done") == "true"
    assert dashboard.inner_text(".answer .text") == local_model.generate(LONG, 40).text
    assert dashboard.evaluate("window.updates") > 10

    assert dashboard.get_attribute(".answer", "data-finish") == "length"  # 40 tokens cannot count to 300
    assert "cut off at 40 tokens" in dashboard.inner_text(".answer .truncated")

    provenance = dashboard.query_selector(".answer .provenance[data-session]")
    session = provenance.get_attribute("data-session")
    assert provenance.get_attribute("data-root") == default_store.root
    first = next(n for n in swarm3.nodes if n.blocks == (0, 10))
    assert provenance.query_selector("a").inner_text() == f"{first.name} [0:10)"  # public names, not IDs
    for node in swarm3.nodes:  # the answer is traceable: every node logged that session
        serve_entry(node.ledger, session)
    provenance.query_selector("a").click()  # the first node of the chain, in the ledger explorer
    row = dashboard.locator(f"#serves tr[data-session='{session}']")  # re-found as the table refreshes
    row.wait_for(timeout=WAIT_MS)
    assert "verified ✓" in row.inner_text() and "signed" in row.inner_text()
    with dashboard.expect_download() as saved:  # the proof, as a file anyone can check offline
        row.locator("a").click()
    assert dashboard.inner_text("#ledger-head").startswith(f"{first.name}: ")
    proven = check_inclusion_proof(json.loads(Path(saved.value.path()).read_text()), first.peer_id)
    assert proven.entry.session == session and proven.entry.blocks == (0, 10)
    assert dashboard.errors == []


def test_no_sideways_scrolling_on_narrow_screens(dashboard):
    """Wide tables scroll inside their box; the page itself fits the screen (after a chat, with long IDs)."""
    try:
        for width in (990, 760, 360):
            dashboard.set_viewport_size({"width": width, "height": 900})
            assert dashboard.evaluate("document.documentElement.scrollWidth") <= width
    finally:
        dashboard.set_viewport_size({"width": 1400, "height": 1000})


def test_a_killed_nodes_blocks_turn_unserved_and_requests_get_a_503_naming_them(browser, default_store, tmp_path):
    # a 10 s announce period: the killed node's record lives on for 30 s, long after it stops answering pings
    with LocalSwarm(str(default_store.path), tmp_path / "swarm", announce_period=10.0,
                    node_args=FIXED_THROUGHPUT) as swarm:
        swarm.start(2, default_store.manifest.num_blocks)
        with run_gateway(swarm.initial_peers, tmp_path / "gateway", args=["--recover-timeout", "3"]) as gw:
            page = _open(browser, gw.url)
            page.wait_for_function("() => document.querySelectorAll('.block[data-servers=\"1\"]').length == 30",
                                   timeout=WAIT_MS)
            second = next(n for n in swarm.nodes if n.blocks == (15, 30))
            swarm.kill(second, signal.SIGKILL)
            page.wait_for_function(  # counted by who answers, not by records that outlive their node
                "() => document.getElementById('summary').innerText.includes('1 of 2 nodes online')", timeout=WAIT_MS)
            assert "1 not answering" in page.inner_text("#summary")
            assert _servers_per_block(page) == [1] * 15 + [0] * 15
            assert "Unserved blocks 15-29" in page.inner_text("#unserved")
            page.select_option("#ledger-node", second.peer_id)  # its record is still there: try its ledger
            page.wait_for_function("() => document.getElementById('ledger-head').innerText.includes('answer')",
                                   timeout=WAIT_MS)
            head = page.inner_text("#ledger-head")
            assert head.startswith(f"{second.name}: ") and "dial" not in head and "P2P" not in head, head
            page.wait_for_selector(f"#nodes tr.gone[data-peer='{second.peer_id}']", timeout=WAIT_MS)  # expired
            # Chromium logs the dead node's ledger answers (502, then 404 once its record expired): nothing else
            assert [e for e in page.errors if not e.startswith("Failed to load resource")] == []
            page.close()

            fresh = _open(browser, gw.url)  # a tab opened afterwards: the gateway remembers who left
            fresh.wait_for_selector(f"#nodes tr.gone[data-peer='{second.peer_id}']", timeout=WAIT_MS)
            assert "1 gone" in fresh.inner_text("#summary") and "1 of 1 nodes online" in fresh.inner_text("#summary")
            assert fresh.errors == []
            fresh.close()

            client = openai.OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0, timeout=300)
            with pytest.raises(openai.InternalServerError) as caught:
                client.chat.completions.create(model=MODEL, messages=LONG, max_tokens=4)
            assert caught.value.status_code == 503 and caught.value.code == "no_route"
            assert "uncovered blocks 15-29" in caught.value.message
            assert caught.value.body["uncovered_blocks"] == list(range(15, 30))

