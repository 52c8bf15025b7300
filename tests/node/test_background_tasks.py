"""Background tasks: a failure nobody awaits is collected and logged by us, never by asyncio's
"Task exception was never retrieved" (the fuzzer's node logs showed it for clients gone mid-step)."""

import asyncio
import gc
import logging

import pytest

from routing.tasks import background


async def _fails(error: BaseException) -> None:
    await asyncio.sleep(0)
    raise error


@pytest.mark.parametrize("error, level", [(BrokenPipeError("client gone"), logging.DEBUG),
                                          (ValueError("a bug"), logging.WARNING)])
def test_an_unawaited_failure_is_collected(caplog, error, level):
    async def main() -> None:
        background(_fails(error), "a step")  # no reference kept by the caller
        for _ in range(3):
            await asyncio.sleep(0)
        gc.collect()

    with caplog.at_level(logging.DEBUG):
        asyncio.run(main())
        gc.collect()
    assert "never retrieved" not in caplog.text
    ours = [r for r in caplog.records if r.name == "routing.tasks"]
    assert [r.levelno for r in ours] == [level] and "a step" in ours[0].getMessage()
