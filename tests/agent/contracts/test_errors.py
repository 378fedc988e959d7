"""Errors said in full: redis-py's print as their class alone, and many have only a cause's message."""

import redis.exceptions

from agent.contracts.errors import describe


def test_an_error_without_a_message_says_its_causes():
    try:
        try:
            raise TimeoutError("Timeout reading from 127.0.0.1:6379")
        except TimeoutError as cause:
            raise redis.exceptions.TimeoutError() from cause
    except redis.exceptions.TimeoutError as error:
        assert repr(error) == "network:TimeoutError"  # what the logs said
        assert describe(error) == "TimeoutError: TimeoutError: Timeout reading from 127.0.0.1:6379"


def test_an_error_says_its_message_and_its_notes():
    error = redis.exceptions.ConnectionError("Connection closed by server.")
    error.add_note("Redis at 10.0.0.5:6379/0")
    assert describe(error) == "ConnectionError: Connection closed by server. (Redis at 10.0.0.5:6379/0)"
    assert describe(ValueError()) == "ValueError"
