"""The mint protocol's grammar, exactly: what parses, what is refused, and with which code."""

from __future__ import annotations

import pytest

from tokensvc.core.errors import DaemonUnavailable, MintRefused
from tokensvc.usernode.protocol import (
    MAX_REQUEST,
    MintRequest,
    RequestError,
    error_reply,
    format_request,
    ok_reply,
    parse_reply,
    parse_request,
)


@pytest.mark.parametrize(
    ("data", "ttl"),
    [
        (b"MINT1\n", None),
        (b"MINT1 1\n", 1),
        (b"MINT1 300\n", 300),
        (b"MINT1 99999\n", 99999),
    ],
)
def test_valid_requests(data: bytes, ttl: int | None) -> None:
    assert parse_request(data) == MintRequest(ttl, None)
    assert format_request(ttl) == data


D = "0123456789abcdef" * 4  # a request digest: 64 lowercase hex digits
DIGITS = "1" * 64  # all digits: still a digest, never a ttl


@pytest.mark.parametrize(
    ("data", "ttl", "bind"),
    [
        (f"MINT2 300 {D}\n".encode(), 300, D),
        (f"MINT2 {D}\n".encode(), None, D),
        (f"MINT2 99999 {D}\n".encode(), 99999, D),
        (f"MINT2 1 {DIGITS}\n".encode(), 1, DIGITS),
        (f"MINT2 {DIGITS}\n".encode(), None, DIGITS),
    ],
)
def test_valid_bound_requests(data: bytes, ttl: int | None, bind: str) -> None:
    assert parse_request(data) == MintRequest(ttl, bind)
    assert format_request(ttl, bind) == data


@pytest.mark.parametrize("data", [b"MINT2\n", b"MINT2 300\n"])
def test_mint2_always_carries_a_digest(data: bytes) -> None:
    # Unbound is spelled MINT1 only: one spelling per request.
    with pytest.raises(RequestError) as err:
        parse_request(data)
    assert err.value.code == "malformed"


def test_the_longest_request_is_the_maximum() -> None:
    longest = format_request(99999, D)
    assert len(longest) == MAX_REQUEST == 77
    assert parse_request(longest) == MintRequest(99999, D)


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "malformed"),
        (b"\n", "malformed"),
        (b"MINT1", "malformed"),  # no newline (half-closed)
        (b"MINT1 300", "malformed"),
        (b"MINT1 0\n", "malformed"),
        (b"MINT1 00\n", "malformed"),
        (b"MINT1 0300\n", "malformed"),
        (b"MINT1 100000\n", "malformed"),
        (b"MINT1 -1\n", "malformed"),
        (b"MINT1 +1\n", "malformed"),
        (b"MINT1  300\n", "malformed"),
        (b"MINT1 300 \n", "malformed"),
        (b" MINT1\n", "malformed"),
        (b"MINT1\r\n", "malformed"),
        (b"MINT1 300\r\n", "malformed"),
        (b"MINT1\t300\n", "malformed"),
        (b"MINT1 3e2\n", "malformed"),
        (b"MINT1 0x10\n", "malformed"),
        (b"MINT1 1_0\n", "malformed"),
        ("MINT1 \uff13\n".encode(), "malformed"),  # FULLWIDTH DIGIT THREE
        ("MINT1 \u0663\n".encode(), "malformed"),  # ARABIC-INDIC DIGIT THREE
        (b"MINT1 \x00300\n", "malformed"),
        (b"MINT1\n\n", "malformed"),
        (b"MINT1\nMINT1\n", "malformed"),
        (b"MINT1 300\nuid=0\n", "malformed"),
        (b"mint1\n", "malformed"),
        (b"MINT\n", "malformed"),
        (b"MINT3\n", "version"),
        (b"MINT3 300\n", "version"),
        (b"MINT10\n", "version"),
        (b"MINT0\n", "version"),
        (f"MINT1 {D}\n".encode(), "malformed"),  # MINT1 carries no digest
        (f"MINT1 300 {D}\n".encode(), "malformed"),
        (f"MINT2 {D} 300\n".encode(), "malformed"),  # ttl first
        (f"MINT2 {D.upper()}\n".encode(), "malformed"),
        (f"MINT2 {D[:-1]}\n".encode(), "malformed"),
        (f"MINT2 {D}0\n".encode(), "malformed"),
        (f"MINT2 {D} {D}\n".encode(), "too-long"),
        (f"MINT2  {D}\n".encode(), "malformed"),
        (f"MINT2 300  {D}\n".encode(), "malformed"),
        (f"MINT2 300 {D} \n".encode(), "malformed"),
        (f"MINT2 300 {D}\r\n".encode(), "malformed"),
        (f"MINT2 300\t{D}\n".encode(), "malformed"),
        (f"MINT2 0 {D}\n".encode(), "malformed"),
        (f"MINT2 100000 {D}\n".encode(), "too-long"),
        (f"MINT2 300 {D}".encode(), "malformed"),  # no newline (half-closed)
        (f"MINT2 300 0x{D[:-2]}\n".encode(), "malformed"),
        (f"MINT2 300 {D}\nMINT2\n".encode(), "too-long"),
        (f"MINT2 {D}\nMINT2\n".encode(), "malformed"),
        (f"MINT2 300 {D[:-1]}\u0663\n".encode(), "malformed"),  # ARABIC-INDIC DIGIT THREE
        (b"MINT2 300 " + b"g" * 64 + b"\n", "malformed"),
        (b"MINT2 " + b"1" * 65 + b"\n", "malformed"),
        (b"X" * (MAX_REQUEST + 1), "too-long"),
        (b"MINT1 " + b"1" * 80 + b"\n", "too-long"),
        (b"MINT1 " + b"1" * 40 + b"\n", "malformed"),
    ],
)
def test_refused_requests(data: bytes, code: str) -> None:
    with pytest.raises(RequestError) as info:
        parse_request(data)
    assert info.value.code == code
    reply = info.value.reply
    assert reply.startswith(f"ERR {code} ".encode()) and reply.endswith(b"\n")
    assert len(reply) < 100
    parsed = _refusal_text(reply)
    assert code in parsed


def _refusal_text(reply: bytes) -> str:
    with pytest.raises(MintRefused) as info:
        parse_reply(reply)
    return str(info.value)


@pytest.mark.parametrize("ttl", [0, -1, 100000, True, 3.0, "30"])
def test_format_request_rejects_bad_ttl(ttl: object) -> None:
    with pytest.raises(ValueError, match="ttl must be an integer"):
        format_request(ttl)  # type: ignore[arg-type]


@pytest.mark.parametrize("bind", ["", D.upper(), D[:-1], D + "0", b"0" * 64, 7])
def test_format_request_rejects_bad_binding(bind: object) -> None:
    with pytest.raises(ValueError, match="bind must be a request digest"):
        format_request(300, bind)  # type: ignore[arg-type]


def test_every_prefix_and_extension_of_a_bound_request_is_refused() -> None:
    good = format_request(300, D)
    for n in range(len(good)):
        with pytest.raises(RequestError):
            parse_request(good[:n])
    for extra in (b"\n", b" ", b"0", b"\x00"):
        with pytest.raises(RequestError):
            parse_request(good + extra)


def test_replies_round_trip() -> None:
    assert parse_reply(ok_reply("abc_-XYZ019")) == "abc_-XYZ019"
    with pytest.raises(MintRefused, match=r"\(ttl\): ttl must be 1..3600 seconds"):
        parse_reply(error_reply("ttl", "ttl must be 1..3600 seconds"))


@pytest.mark.parametrize(
    "reply",
    [
        b"",
        b"OK \n",
        b"OK abc",
        b"OK abc def\n",
        b"OK a+b/c=\n",
        b"ERR\n",
        b"ERR x\n",
        b"ERR BAD upper\n",
        b"ERR ttl \x01\n",
        b"HTTP/1.1 200 OK\r\n",
    ],
)
def test_garbage_replies_mean_daemon_unavailable(reply: bytes) -> None:
    with pytest.raises(DaemonUnavailable, match="malformed reply"):
        parse_reply(reply)
