"""A service's ``/metrics`` read with prometheus_client's own text parser."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families


def scrape(url: str) -> str:
    """The exposition text of the service at ``url``, on a fresh connection."""
    return httpx.get(f"{url}/metrics", timeout=10, headers={"Connection": "close"}).text


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` (a sample name: ``..._total``, ``..._count``) whose
    labels include ``labels``; 0 when there are none."""
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )
