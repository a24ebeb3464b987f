"""What providers' rate-limit headers say about a deployment's limits, as plain numbers.

OpenAI and Azure send `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` (resets as
durations like `1s`, `6m0s`, `20ms`); Anthropic `anthropic-ratelimit-{requests,tokens,
input-tokens,output-tokens}-{limit,remaining,reset}` (resets as RFC 3339 times); Mistral
`x-ratelimitbysize-{limit,remaining}-minute` for tokens. A limit becomes the deployment's
learned rpm or tpm; a `remaining` of 0 pauses it until there is room for the next call (about
one request's share of the minute, at most until the reset). Pure functions: the clock is
passed in.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

_DURATION = re.compile(
    r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?(?:(\d+(?:\.\d+)?)s)?(?:(\d+(?:\.\d+)?)ms)?$"
)


@dataclass(frozen=True)
class LearnedLimits:
    rpm: float | None = None
    tpm: float | None = None
    paused_until: float | None = None  # epoch seconds: a limit ran out until then


def parse_duration(value: str) -> float | None:
    """Seconds from OpenAI's reset format (`1s`, `6m0s`, `20ms`, `1h2m3.5s`) or a plain number."""
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    match = _DURATION.match(value)
    if not match or not any(match.groups()):
        return None
    hours, minutes, seconds, millis = (float(g) if g else 0.0 for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds + millis / 1000


def parse_reset(value: str, now: float) -> float | None:
    """Seconds from now until a reset given as a duration or an RFC 3339 time."""
    seconds = parse_duration(value)
    if seconds is not None:
        return seconds
    try:
        when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return max(0.0, when.timestamp() - now)


def _number(headers: Mapping[str, str], name: str) -> float | None:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        return float(raw)
    except ValueError:
        return None


# (limit, remaining, reset) header names of each family, by what they limit.
_REQUESTS = (
    ("x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests"),
    (
        "anthropic-ratelimit-requests-limit",
        "anthropic-ratelimit-requests-remaining",
        "anthropic-ratelimit-requests-reset",
    ),
)
_TOKENS = (
    ("x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"),
    (
        "anthropic-ratelimit-tokens-limit",
        "anthropic-ratelimit-tokens-remaining",
        "anthropic-ratelimit-tokens-reset",
    ),
    ("x-ratelimitbysize-limit-minute", "x-ratelimitbysize-remaining-minute", ""),
)


def _next_room_s(rpm: float | None) -> float:
    """How long an exhausted window is waited out. A reset is when the whole window is
    replenished (OpenAI's, Anthropic's: the newest call ageing out, up to a minute away), but
    room for the next call comes as the oldest calls age out: about one call's share of the
    minute when calls are paced. Waiting for the full reset would idle a paced deployment for
    a minute each time its window touches 0; a wait too short is corrected by the provider's
    429, whose Retry-After is exact."""
    return 60.0 / rpm if rpm else 1.0


def parse_limits(headers: Mapping[str, str], now: float) -> LearnedLimits:
    """The limits and any exhausted window these headers (lower-cased names) announce."""
    lowered = {k.lower(): v for k, v in headers.items()}
    found: dict[str, float | None] = {"rpm": None, "tpm": None}
    paused: float | None = None
    for kind, families in (("rpm", _REQUESTS), ("tpm", _TOKENS)):
        for limit_name, remaining_name, reset_name in families:
            limit = _number(lowered, limit_name)
            if limit is None:
                continue
            found[kind] = limit if limit > 0 else None
            remaining = _number(lowered, remaining_name)
            reset = parse_reset(lowered[reset_name], now) if reset_name and reset_name in lowered else None
            if remaining is not None and remaining <= 0 and reset:
                paused = max(paused or 0.0, now + min(reset, _next_room_s(found["rpm"])))
            break
    return LearnedLimits(found["rpm"], found["tpm"], paused)
