"""The stream settings: --recover-timeout (30 s) and --keepalive (15 s), positive seconds."""

from __future__ import annotations

import pytest

from node.errors import ConfigError
from swarmlm.api.settings import resolve
from tests.api.test_settings import PEER, _parse


def test_a_stream_waits_30s_for_recovery_and_speaks_every_15s_by_default(tmp_path):
    s = resolve(_parse("--peers", PEER), {"SWARMLM_HOME": str(tmp_path)})
    assert (s.recover_timeout, s.keepalive) == (30.0, 15.0)
    s = resolve(_parse("--peers", PEER, "--keepalive", "0.5"),
                {"SWARMLM_HOME": str(tmp_path), "SWARMLM_API_RECOVER_TIMEOUT": "120"})
    assert (s.recover_timeout, s.keepalive) == (120.0, 0.5)


@pytest.mark.parametrize("flag, value", [("--keepalive", "0"), ("--recover-timeout", "-1"), ("--keepalive", "nan")])
def test_stream_timeouts_must_be_positive(tmp_path, flag, value):
    with pytest.raises(ConfigError, match=f"{flag} must be > 0"):
        resolve(_parse("--peers", PEER, flag, value), {"SWARMLM_HOME": str(tmp_path)})
