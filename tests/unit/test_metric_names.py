"""The Grafana dashboard beside docker-compose.yml asks only for metrics llmqueue defines
(every one is in workers/metrics.py), and the rate-limit headers read as the providers send them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from workers.metrics import rate_limit_use

ROOT = Path(__file__).resolve().parents[2]
SUFFIXES = ("_bucket", "_count", "_sum", "_total")


def defined() -> set[str]:
    source = (ROOT / "workers" / "metrics.py").read_text()
    return set(re.findall(r'"(llmqueue_[a-z_]+)"', source))


def test_the_dashboard_uses_defined_metrics_only() -> None:
    dashboard = json.loads((ROOT / "grafana-dashboard.json").read_text())
    asked = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"llmqueue_[a-z_]+", target["expr"])
    }
    assert asked
    for name in asked:
        base = next((name.removesuffix(s) for s in SUFFIXES if name.endswith(s)), name)
        assert name in defined() or base in defined(), name


def test_rate_limit_use_from_each_providers_headers() -> None:
    openai = {"x-ratelimit-limit-requests": "100", "x-ratelimit-remaining-requests": "75"}
    anthropic = {"anthropic-ratelimit-tokens-limit": "1000", "anthropic-ratelimit-tokens-remaining": "900"}
    mistral = {"x-ratelimitbysize-limit-minute": "500", "x-ratelimitbysize-remaining-minute": "0"}
    assert rate_limit_use(openai) == {"requests": 0.25}
    assert rate_limit_use(anthropic) == {"tokens": pytest.approx(0.1)}
    assert rate_limit_use(mistral) == {"tokens": 1.0}
    assert rate_limit_use({"x-ratelimit-limit-requests": "x"}) == {}
