"""The unsupported-parameter message names the parameter and shows a bounded value cut cleanly."""

import pytest

from swarmlm.api.errors import APIError
from swarmlm.api.schemas import chat_request


def test_long_value_is_ellipsized_at_a_word_boundary() -> None:
    function = {"name": "get_weather", "description": "Get the weather in a city", "parameters": {"type": "object"}}
    with pytest.raises(APIError) as raised:
        chat_request({"model": "m", "messages": [{"role": "user", "content": "hi"}], "functions": [function]})
    message = raised.value.message
    assert message.startswith("'functions' = [{'name': 'get_weather', 'description': 'Get the weather in …")
    assert " … is not supported by this gateway" in message
    assert "'d is not" not in message and len(message) < 120
