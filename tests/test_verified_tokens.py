"""The API's cache of verified bearer tokens (``api.deps.VerifiedTokens``): it saves the signature
check and its thread, and never outlives the token, its time to live or the key set."""

from __future__ import annotations

import base64
import json

from api.deps import VerifiedTokens, token_expiry
from reintegration.tokens import Claims
from workflows.model import Role

CLAIMS = Claims(sub="cw-1", role=Role.caseworker, countries=["ES"])


def token(exp: float | None) -> str:
    body = base64.urlsafe_b64encode(json.dumps({} if exp is None else {"exp": exp}).encode()).rstrip(b"=").decode()
    return f"header.{body}.signature"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_a_verified_token_is_trusted_until_its_expiry_or_the_time_to_live_whichever_comes_first():
    clock, keys = Clock(), object()
    cache = VerifiedTokens(ttl_seconds=60, clock=clock)
    short, long = token(exp=1_020), token(exp=5_000)
    cache.put(short, CLAIMS, keys)
    cache.put(long, CLAIMS, keys)
    clock.now = 1_019
    assert cache.get(short, keys) == CLAIMS and cache.get(long, keys) == CLAIMS
    clock.now = 1_020
    assert cache.get(short, keys) is None  # its own expiry
    assert cache.get(long, keys) == CLAIMS
    clock.now = 1_060
    assert cache.get(long, keys) is None  # the time to live
    assert cache.get(token(exp=9_999), keys) is None  # never verified


def test_a_new_key_set_checks_every_token_again():
    cache, before, after = VerifiedTokens(), object(), object()
    t = token(exp=None)
    cache.put(t, CLAIMS, before)
    assert cache.get(t, before) == CLAIMS
    assert cache.get(t, after) is None  # verified against keys the verifier no longer holds
    assert cache.get(t, before) is None  # and forgotten


def test_no_time_to_live_keeps_nothing_and_the_oldest_go_first():
    clock = Clock()
    assert VerifiedTokens(ttl_seconds=0, clock=clock).get(token(None), None) is None
    off = VerifiedTokens(ttl_seconds=0, clock=clock)
    off.put(token(None), CLAIMS, None)
    assert off.get(token(None), None) is None
    small = VerifiedTokens(max_tokens=2, clock=clock)
    for n in range(3):
        small.put(token(exp=2_000 + n), CLAIMS, None)
    assert small.get(token(exp=2_000), None) is None
    assert small.get(token(exp=2_001), None) == CLAIMS and small.get(token(exp=2_002), None) == CLAIMS


def test_an_unreadable_expiry_is_no_expiry():
    assert token_expiry("not-a-jwt") is None
    assert token_expiry("a.!!!.c") is None
    assert token_expiry(token(exp=None)) is None
    assert token_expiry(token(exp=12.5)) == 12.5
