"""Retry-After and RateLimit header values: parsing what servers send, writing what clients read."""

from __future__ import annotations

import email.utils
import math

import pytest

from resilio._core.limiters import (
    FixedWindowAlgorithm,
    GcraAlgorithm,
    LeakyAlgorithm,
    SlidingWindowAlgorithm,
)
from resilio._http_headers import (
    check_policy_name,
    delay_seconds,
    format_items,
    parse_ratelimit,
    parse_retry_after,
    policy_terms,
    ratelimit_delay,
)

NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("0", 0.0), ("7", 7.0), (" 120 ", 120.0), ("007", 7.0), ("99999999999999999999", math.inf)],
)
def test_retry_after_delay_seconds(value: str, seconds: float) -> None:
    assert parse_retry_after(value) == seconds


def test_retry_after_http_date_is_relative_to_now() -> None:
    value = email.utils.formatdate(NOW + 42, usegmt=True)
    assert parse_retry_after(value, now=NOW) == pytest.approx(42.0)


def test_retry_after_date_in_the_past_means_now() -> None:
    assert parse_retry_after(email.utils.formatdate(NOW - 3600, usegmt=True), now=NOW) == 0.0


def test_retry_after_date_without_zone_is_utc() -> None:
    value = email.utils.formatdate(NOW + 60, usegmt=True).replace(" GMT", "")
    assert parse_retry_after(value, now=NOW) == pytest.approx(60.0)


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "-5",
        "1.5",
        "+3",
        "soon",
        "5, 5",
        "1e3",
        "٣",
        "Wed, 99 Foo 2015 07:28:00 GMT",
        "Mon",
    ],
)
def test_malformed_retry_after_is_unusable(value: str | None) -> None:
    assert parse_retry_after(value, now=NOW) is None


def test_ratelimit_items_and_parameters() -> None:
    items = parse_ratelimit('"burst";r=0;t=5, "daily";r=900;t=3600, plain;r=1')
    assert items == [
        ("burst", {"r": "0", "t": "5"}),
        ("daily", {"r": "900", "t": "3600"}),
        ("plain", {"r": "1"}),
    ]
    assert parse_ratelimit('"a \\"q\\"";r=1') == [('a "q"', {"r": "1"})]


@pytest.mark.parametrize("value", [None, "", '"open', ";r=1", '"a";r=1 junk'])
def test_malformed_ratelimit_is_ignored(value: str | None) -> None:
    assert parse_ratelimit(value) is None
    assert ratelimit_delay(value) is None


def test_ratelimit_delay_is_the_longest_exhausted_policy() -> None:
    assert ratelimit_delay('"a";r=0;t=5, "b";r=0;t=9, "c";r=3;t=60') == 9.0
    assert ratelimit_delay('"a";r=2;t=5') is None
    assert ratelimit_delay('"a";r=0;t=-1') is None


def test_formatting_round_trips() -> None:
    text = format_items([("per client", (("r", 0), ("t", 5))), ('we"ird', (("q", 10),))])
    assert text == '"per client";r=0;t=5, "we\\"ird";q=10'
    assert parse_ratelimit(text) == [("per client", {"r": "0", "t": "5"}), ('we"ird', {"q": "10"})]


def test_delay_seconds_rounds_up() -> None:
    assert [delay_seconds(s) for s in (-1.0, 0.0, 0.001, 1.0, 1.2, 59.999)] == [0, 0, 1, 1, 2, 60]


def test_policy_names_must_be_printable_ascii() -> None:
    assert check_policy_name("per-client") == "per-client"
    for bad in ("", "naïve", "tab\there"):
        with pytest.raises(ValueError, match="printable ASCII"):
            check_policy_name(bad)


def test_policy_terms_per_algorithm() -> None:
    assert policy_terms(FixedWindowAlgorithm(100, 60_000_000)) == (100, 60)
    assert policy_terms(SlidingWindowAlgorithm(5, 1_500_000)) == (5, 2)
    # A token bucket of 10 per second, capacity 20: 20 units refill in 2 s.
    assert policy_terms(GcraAlgorithm(100_000, 20)) == (20, 2)
    # A leaky bucket of 4 per second, and one of 1 per 3 seconds.
    assert policy_terms(LeakyAlgorithm(250_000, 4)) == (4, 1)
    assert policy_terms(LeakyAlgorithm(3_000_000, 1)) == (1, 3)
