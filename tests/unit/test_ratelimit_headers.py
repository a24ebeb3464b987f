"""What the providers' rate-limit headers teach: limits, and how long an exhausted window waits."""

from __future__ import annotations

import pytest

from workers.ratelimit_headers import parse_duration, parse_limits

NOW = 1_000_000.0


def test_openai_headers_give_the_limits_and_no_pause_while_room_is_left() -> None:
    learned = parse_limits(
        {
            "x-ratelimit-limit-requests": "600",
            "x-ratelimit-remaining-requests": "12",
            "x-ratelimit-reset-requests": "59.9s",
            "x-ratelimit-limit-tokens": "9000",
            "x-ratelimit-remaining-tokens": "500",
            "x-ratelimit-reset-tokens": "1m0s",
        },
        NOW,
    )
    assert (learned.rpm, learned.tpm, learned.paused_until) == (600, 9000, None)


def test_an_exhausted_window_waits_for_the_next_calls_room_not_the_full_reset() -> None:
    """The reset is when the whole window is free (the newest call ageing out, nearly a minute
    for a paced stream); the next call has room when the oldest ages out: one call's share."""
    headers = {
        "x-ratelimit-limit-requests": "600",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "59.9s",
    }
    assert parse_limits(headers, NOW).paused_until == pytest.approx(NOW + 0.1)
    soon = {**headers, "x-ratelimit-reset-requests": "20ms"}
    assert parse_limits(soon, NOW).paused_until == pytest.approx(NOW + 0.02)  # never past the reset


def test_exhausted_tokens_wait_a_requests_share_or_a_second() -> None:
    tokens = {
        "anthropic-ratelimit-tokens-limit": "5000",
        "anthropic-ratelimit-tokens-remaining": "0",
        "anthropic-ratelimit-tokens-reset": "1970-01-12T13:47:40Z",  # NOW + 60 s
    }
    assert parse_limits(tokens, NOW).paused_until == NOW + 1.0
    with_requests = {
        **tokens,
        "anthropic-ratelimit-requests-limit": "120",
        "anthropic-ratelimit-requests-remaining": "50",
        "anthropic-ratelimit-requests-reset": "1970-01-12T13:47:40Z",
    }
    learned = parse_limits(with_requests, NOW)
    assert (learned.rpm, learned.tpm, learned.paused_until) == (120, 5000, pytest.approx(NOW + 0.5))


def test_reset_durations() -> None:
    assert parse_duration("6m0s") == 360 and parse_duration("20ms") == 0.02
    assert parse_duration("1h2m3.5s") == 3723.5 and parse_duration("1.5") == 1.5
    assert parse_duration("soon") is None
