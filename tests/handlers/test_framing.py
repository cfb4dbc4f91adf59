"""The sans-IO framers, bytes only: no sockets, no loop.

STYLE.md "Tests": every input is fed at every split point and in every chunk
size down to one byte, and must always give the same messages.
"""

from __future__ import annotations

import inspect
import textwrap
from typing import Callable

import pytest

from handlers import framing
from handlers.errors import MessageTooLong, ProtocolError, UsageError
from handlers.framing import DEFAULT_MAX_LENGTH, Chunk, Fixed, FrameBuffer, Framer, LengthPrefixed, Line, Terminator


class Netstring(Framer):
    '''b"5:hello," -> b"hello"'''
    def find(self, data):
        colon = data.find(b":")
        if colon < 0:
            return None
        size = int(data[:colon])
        end = colon + 1 + size
        if len(data) <= end:
            return None
        return bytes(data[colon + 1 : end]), end + 1


def netstring(payload: bytes) -> bytes:
    return b"%d:%s," % (len(payload), payload)


def run(fb: FrameBuffer, parts: list) -> tuple[list[bytes], int | None, MessageTooLong | None]:
    """Feed ``parts``, taking messages after each: (messages, index of the part that raised, error)."""
    out: list[bytes] = []
    for k, part in enumerate(parts):
        fb.feed(part)
        try:
            while (message := fb.next()) is not None:
                out.append(message)
        except MessageTooLong as exc:
            return out, k, exc
    return out, None, None


def splits(wire: bytes) -> list[list[bytes]]:
    return [[wire[:i], wire[i:]] for i in range(len(wire) + 1)]


def chunked(wire: bytes, size: int) -> list[bytes]:
    return [wire[i : i + size] for i in range(0, len(wire), size)]


# ------------------------------------------------------------------ streams

Stream = tuple[Callable[[], Framer], bytes, list[bytes]]


def encoded(make: Callable[[], Framer], payloads: list[bytes], strip_header: bool) -> Stream:
    framer = make()
    frames = [framer.encode(p) for p in payloads]
    return make, b"".join(frames), (list(payloads) if strip_header else frames)


def lp_payloads(width: int) -> list[bytes]:
    base = [b"hello", b"", b"\x00\x01\x02", b"\xff" * 7, b"", bytes(range(255))]
    return base + ([bytes(range(256)) + b"z" * 44] if width > 1 else [])


STREAMS: dict[str, Stream] = {
    "line": encoded(Line, [b"hello", b"\r\n", b"", b"\x00\xff\xfe binary\r", b"a\rb", b"last\n"], False),
    "crlf": encoded(lambda: Terminator(b"\r\n"), [b"hello", b"", b"\x00\xff\n\r", b"\r", b"bare\n", b"done\r\n"], False),
    "END": encoded(lambda: Terminator(b"END"), [b"alpha", b"", b"EN", b"E", b"ND", b"\xff\x00bin", b"fooEND"], False),
    "fixed3": (lambda: Fixed(3), b"abc\x00\x00\x00\r\n\n\xff\xfe\xfdEND", [b"abc", b"\x00\x00\x00", b"\r\n\n", b"\xff\xfe\xfd", b"END"]),
    "netstring": (Netstring, b"".join(map(netstring, NS := [b"hello", b"", b"1:x,", b"\x00\xff", b"y" * 12])), NS),
}
for _w in (1, 2, 4, 8):
    for _order in ("big", "little"):
        STREAMS[f"lp{_w}-{_order}"] = encoded(lambda w=_w, o=_order: LengthPrefixed(w, o), lp_payloads(_w), True)

stream_params = pytest.mark.parametrize("make, wire, expected", list(STREAMS.values()), ids=list(STREAMS))


def test_streams_are_what_they_claim() -> None:
    assert STREAMS["line"][1] == b"hello\n\r\n\n\x00\xff\xfe binary\r\na\rb\nlast\n"
    assert STREAMS["lp2-little"][1].startswith(b"\x05\x00hello\x00\x00\x03\x00\x00\x01\x02")
    assert STREAMS["lp4-big"][1].startswith(b"\x00\x00\x00\x05hello")
    assert STREAMS["netstring"][1] == b"5:hello,0:,4:1:x,,2:\x00\xff,12:yyyyyyyyyyyy,"


def test_netstring_is_the_module_docstring_example() -> None:
    doc = framing.__doc__
    block = doc.split("Writing your own framer is writing that method::\n\n", 1)[1].split("\n\n", 1)[0]
    assert textwrap.dedent(block).strip() == inspect.getsource(Netstring).strip()


@stream_params
def test_every_split_point(make, wire, expected) -> None:
    for parts in splits(wire):
        fb = FrameBuffer(make())
        got = run(fb, parts)
        assert (got, fb.buffered) == ((expected, None, None), 0), f"split at {len(parts[0])}"
        assert all(type(m) is bytes for m in got[0])


@stream_params
def test_every_chunk_size(make, wire, expected) -> None:
    for size in range(1, len(wire) + 1):
        fb = FrameBuffer(make())
        assert (run(fb, chunked(wire, size)), fb.buffered) == ((expected, None, None), 0), f"chunk size {size}"


@stream_params
def test_one_byte_at_a_time(make, wire, expected) -> None:
    fb = FrameBuffer(make())
    got = []
    for i in range(len(wire)):
        fb.feed(wire[i : i + 1])
        got.extend(fb)
    assert (got, fb.buffered, fb.next()) == (expected, 0, None)


@stream_params
@pytest.mark.parametrize("kind", [bytearray, memoryview])
@pytest.mark.parametrize("size", [1, 2, None])
def test_bytearray_and_memoryview_inputs(make, wire, expected, kind, size) -> None:
    fb = FrameBuffer(make())
    assert run(fb, [kind(p) for p in chunked(wire, size or len(wire))]) == (expected, None, None)
    assert fb.buffered == 0


# ------------------------------------------------------------------ limits

L = 10
LIMITED = {
    "line": lambda n: Line(max_length=n),
    "crlf": lambda n: Terminator(b"\r\n", max_length=n),
    "END": lambda n: Terminator(b"END", max_length=n),
    **{f"lp{w}-{o}": (lambda n, w=w, o=o: LengthPrefixed(w, o, max_length=n)) for w in (1, 2, 4, 8) for o in ("big", "little")},
}
limited_params = pytest.mark.parametrize("make", list(LIMITED.values()), ids=list(LIMITED))


def wire_of(framer: Framer, n: int) -> tuple[bytes, bytes]:
    """(wire bytes, message handed on) for a message that counts ``n`` against a limit."""
    if isinstance(framer, Terminator):
        message = b"y" * (n - len(framer.terminator)) + framer.terminator
        return message, message
    if isinstance(framer, LengthPrefixed):
        return framer.encode(b"y" * n), b"y" * n
    return netstring(b"y" * n), b"y" * n  # Netstring


@limited_params
def test_message_of_exactly_max_length_passes_at_every_split(make) -> None:
    good, message = wire_of(make(L), L)
    for parts in splits(good + good):
        fb = FrameBuffer(make(L))
        assert (run(fb, parts), fb.buffered) == (([message, message], None, None), 0)


@limited_params
def test_max_length_plus_one_raises_as_soon_as_known_at_every_split(make) -> None:
    framer = make(L)
    ok, ok_message = wire_of(framer, 3 if isinstance(framer, Terminator) else 0)
    # Known too long once the length header is in, or once L bytes have no terminator.
    known_at = len(ok) + (framer.width if isinstance(framer, LengthPrefixed) else L)
    for parts in splits(ok + wire_of(framer, L + 1)[0]):
        got, k, exc = run(FrameBuffer(make(L)), parts)
        assert (got, k) == ([ok_message], 0 if len(parts[0]) >= known_at else 1), f"split at {len(parts[0])}"
        assert (exc.limit, exc.size) == (L, L + 1)


@limited_params
def test_too_long_error_details(make) -> None:
    exc = run(FrameBuffer(make(L)), [wire_of(make(L), L + 1)[0]])[2]
    assert isinstance(exc, ProtocolError)
    assert (exc.limit, exc.size, exc.reply) == (L, L + 1, None)
    assert str(exc) == f"message of {L + 1} bytes or more is over the limit of {L} bytes"


@pytest.mark.parametrize("term", [b"\n", b"\r\n", b"END"])
def test_partial_terminated_message_raises_once_it_reaches_the_limit(term) -> None:
    framer = Terminator(term, max_length=L)
    assert framer.find(b"y" * (L - 1)) is None
    assert framer.find(b"y" * (L - len(term)) + term[:-1]) is None  # terminator almost there
    for partial in (b"y" * L, b"y" * (L - len(term) + 1) + term[:-1]):
        with pytest.raises(MessageTooLong) as info:
            framer.find(partial)
        assert (info.value.limit, info.value.size) == (L, L + 1)


def test_partial_line_of_max_length_raises_at_once() -> None:
    got, k, exc = run(FrameBuffer(Line(max_length=L)), [b"y" * (L - 1), b"y"])  # no newline yet
    assert (got, k, exc.limit, exc.size) == ([], 1, L, L + 1)


@pytest.mark.parametrize("width", [1, 2, 4, 8])
@pytest.mark.parametrize("order", ["big", "little"])
def test_length_prefix_raises_on_the_header_before_the_body(width, order) -> None:
    framer = LengthPrefixed(width, order, max_length=L)
    assert framer.find(L.to_bytes(width, order)) is None  # legal size, body still to come
    assert framer.find((L + 1).to_bytes(width, order)[:-1]) is None  # header incomplete
    with pytest.raises(MessageTooLong) as info:
        framer.find((L + 1).to_bytes(width, order))
    assert (info.value.limit, info.value.size) == (L, L + 1)
    huge = (1 << (8 * width)) - 1
    with pytest.raises(MessageTooLong) as info:
        framer.find(huge.to_bytes(width, order))
    assert info.value.size == huge


def test_default_limit_is_64k() -> None:
    assert DEFAULT_MAX_LENGTH == 65536
    assert {f.max_length for f in (Line(), Terminator(b"END"), LengthPrefixed(), Chunk(), Framer())} == {65536}
    assert Line().find(b"y" * 65535 + b"\n") == (b"y" * 65535 + b"\n", 65536)
    with pytest.raises(MessageTooLong):
        Line().find(b"y" * 65536)


def test_no_limit_means_no_limit() -> None:
    assert Line(max_length=None).find(b"y" * 200_000) is None
    assert LengthPrefixed(4, max_length=None).find(b"\xff" * 4) is None


# FrameBuffer(limit=...) bounds framers that have no limit of their own.
UNLIMITED = {
    "line": lambda: Line(max_length=None), "END": lambda: Terminator(b"END", max_length=None),
    "lp1": lambda: LengthPrefixed(1, max_length=None), "lp4": lambda: LengthPrefixed(4, max_length=None),
    "netstring": Netstring,
}
unlimited_params = pytest.mark.parametrize("make", list(UNLIMITED.values()), ids=list(UNLIMITED))


@unlimited_params
def test_buffer_limit_exact_message_passes_at_every_split(make) -> None:
    good, message = wire_of(make(), L)
    for parts in splits(good):
        fb = FrameBuffer(make(), limit=L)
        assert (run(fb, parts), fb.buffered) == (([message], None, None), 0), f"split at {len(parts[0])}"


@unlimited_params
def test_buffer_limit_plus_one_raises_at_every_split(make) -> None:
    bad, _ = wire_of(make(), L + 1)
    for parts in splits(bad):
        got, k, exc = run(FrameBuffer(make(), limit=L), parts)
        assert (got, k is None) == ([], False), f"split at {len(parts[0])}: not raised"
        assert exc.limit == L and exc.size > L


@unlimited_params
def test_buffer_limit_on_a_partial_message_allows_the_framers_overhead(make) -> None:
    framer = make()
    partial = wire_of(framer, 200)[0][: L + framer.overhead + 1]
    got, k, exc = run(FrameBuffer(framer, limit=L), [partial[:-1], partial[-1:]])
    assert (got, k, exc.limit, exc.size) == ([], 1, L, L + framer.overhead + 1)


@pytest.mark.parametrize("last", [b"y", b"\n"], ids=["partial", "complete"])
def test_buffer_limit_boundary(last) -> None:
    got, k, exc = run(FrameBuffer(Line(max_length=None), limit=L), [b"y" * L, last])
    assert (got, k, exc.limit, exc.size) == ([], 1, L, L + 1)  # L bytes held are not over L; L + 1 are
    assert f"limit of {L} bytes" in str(exc)


@pytest.mark.parametrize("framer_limit, buffer_limit", [(20, L), (L, 20)])
def test_smaller_of_framer_and_buffer_limit_wins(framer_limit, buffer_limit) -> None:
    fb = FrameBuffer(Line(max_length=framer_limit), limit=buffer_limit)
    got, _, exc = run(fb, [b"y" * (L - 1) + b"\n" + b"y" * L + b"\n"])
    assert (got, exc.limit, exc.size) == ([b"y" * (L - 1) + b"\n"], L, L + 1)


def test_message_too_long_is_a_protocol_error() -> None:
    exc = MessageTooLong(11, 10)
    assert isinstance(exc, ProtocolError) and (exc.size, exc.limit, exc.reply) == (11, 10, None)
    assert MessageTooLong(11, 10, b"too long\r\n").reply == b"too long\r\n"


# ------------------------------------------------------------------ Chunk


def test_chunk_returns_what_is_buffered_capped() -> None:
    assert (Chunk(4).find(b"abc"), Chunk(4).find(b"abcd")) == ((b"abc", 3), (b"abcd", 4))
    assert Chunk(4).find(bytearray(b"abcdef")) == (b"abcd", 4)
    assert Chunk(None).find(b"x" * 100_000) == (b"x" * 100_000, 100_000)
    assert (Chunk().find(b""), FrameBuffer(Chunk()).next()) == (None, None)


def test_chunk_longer_buffer_comes_out_in_max_length_pieces() -> None:
    fb = FrameBuffer(Chunk(4))
    fb.feed(b"abcdefghij")
    assert (list(fb), fb.buffered) == ([b"abcd", b"efgh", b"ij"], 0)


@pytest.mark.parametrize("size", range(1, 12))
def test_chunk_in_every_chunk_size_loses_nothing(size) -> None:
    wire = b"\x00abc\r\ndef\nghi\xff"
    got = run(FrameBuffer(Chunk(4)), chunked(wire, size))[0]
    assert b"".join(got) == wire
    assert [len(m) for m in got] == [len(m) for p in chunked(wire, size) for m in chunked(p, 4)]


# ------------------------------------------------------------------ arguments and encode


@pytest.mark.parametrize(
    "build",
    [
        lambda: Terminator(b""), lambda: LengthPrefixed(width=3), lambda: LengthPrefixed(width=0),
        lambda: LengthPrefixed(byteorder="middle"), lambda: Fixed(0), lambda: Fixed(-3),
        lambda: LengthPrefixed(1).encode(b"x" * 256), lambda: LengthPrefixed(2).encode(b"x" * 65536),
        # A max_length under 1 admits no message; Chunk(0) would even loop forever on (b"", 0).
        lambda: Chunk(0), lambda: Chunk(-1), lambda: Line(max_length=0), lambda: Terminator(b"END", max_length=-1),
        lambda: LengthPrefixed(max_length=0),
    ],
    ids=["empty-terminator", "width-3", "width-0", "byteorder-middle", "fixed-0", "fixed-neg", "lp1-256", "lp2-65536",
         "chunk-0", "chunk-neg", "line-0", "terminator-neg", "lp-0"],
)
def test_bad_arguments_raise_usage_error(build) -> None:
    with pytest.raises(UsageError):
        build()


def test_base_framer_find_is_abstract() -> None:
    with pytest.raises(NotImplementedError, match="Framer must implement find"):
        Framer().find(b"abc")


@pytest.mark.parametrize(
    "framer, message, wire",
    [
        (Line(), b"hi", b"hi\n"), (Line(), b"hi\n", b"hi\n"), (Line(), b"hi\r\n", b"hi\r\n"), (Line(), b"", b"\n"),
        (Terminator(b"\r\n"), b"hi\n", b"hi\n\r\n"), (Terminator(b"\r\n"), b"hi\r\n", b"hi\r\n"),
        (Terminator(b"END"), b"xEN", b"xENEND"), (Terminator(b"END"), b"END", b"END"),
        (Framer(), b"as is\n", b"as is\n"), (Framer(), bytearray(b"\x00\xff"), b"\x00\xff"),
        (Fixed(3), memoryview(b"abc"), b"abc"), (LengthPrefixed(1), b"x" * 255, b"\xff" + b"x" * 255),
        (LengthPrefixed(2, "big"), b"ab", b"\x00\x02ab"), (LengthPrefixed(2, "little"), b"ab", b"\x02\x00ab"),
        (LengthPrefixed(4, "big"), bytearray(b""), b"\x00" * 4), (LengthPrefixed(8, "little"), b"abc", b"\x03" + b"\x00" * 7 + b"abc"),
    ],
)
def test_encode(framer, message, wire) -> None:
    out = framer.encode(message)
    assert (out, type(out)) == (wire, bytes)


# ------------------------------------------------------------------ FrameBuffer


def test_buffered_next_and_clear() -> None:
    fb = FrameBuffer(Line())
    assert (fb.buffered, fb.next()) == (0, None)
    fb.feed(b"one\ntw")
    assert fb.buffered == 6
    assert (fb.next(), fb.buffered, fb.next(), fb.buffered) == (b"one\n", 2, None, 2)
    fb.clear()
    assert fb.buffered == 0
    fb.feed(b"o\n")
    assert fb.next() == b"o\n"  # not b"two\n": clear() dropped the partial line


def test_iteration_consumes() -> None:
    fb = FrameBuffer(Line())
    fb.feed(b"a\nb\nc")
    assert (list(fb), list(fb), fb.buffered) == ([b"a\n", b"b\n"], [], 1)
    fb.feed(b"\n")
    assert (list(fb), fb.buffered) == ([b"c\n"], 0)


def test_same_bytes_object_fed_twice() -> None:
    chunk = b"ab\nc"
    fb = FrameBuffer(Line())
    fb.feed(chunk)
    first = fb.next()
    fb.feed(chunk)
    second = fb.next()
    fb.feed(chunk)
    assert (first, second, fb.next(), fb.buffered) == (b"ab\n", b"cab\n", b"cab\n", 1)
    assert chunk == b"ab\nc"


def test_the_callers_bytearray_is_never_changed() -> None:
    chunk = bytearray(b"ab\ncd")
    fb = FrameBuffer(Line())
    fb.feed(chunk)
    fb.feed(chunk)  # the same object twice: held, not appended to itself
    assert chunk == bytearray(b"ab\ncd")
    assert fb.next() == b"ab\n"
    assert chunk == bytearray(b"ab\ncd")
    assert (list(fb), fb.buffered) == ([b"cdab\n"], 2)


@pytest.mark.parametrize("view", [False, True], ids=["bytearray", "memoryview"])
def test_reusing_the_read_buffer_does_not_change_buffered_bytes(view) -> None:
    # A recv_into() loop reuses one buffer: what was fed must be kept as it was.
    buf = bytearray(b"ab")
    fb = FrameBuffer(Fixed(4))
    fb.feed(memoryview(buf) if view else buf)
    buf[:] = b"XY"
    fb.feed(b"cd")
    first = fb.next()
    assert (first, type(first)) == (b"abcd", bytes)
    fb.feed(buf)  # later feeds and changes to the source leave a returned message alone
    buf[:] = b"ZZ"
    fb.feed(b"zz")
    assert (fb.next(), first) == (b"XYzz", b"abcd")


# ------------------------------------------------------------------ repr


@pytest.mark.parametrize(
    "framer, text",
    [
        (Line(), "Line(max_length=65536)"), (Line(max_length=None), "Line(max_length=None)"),
        (Terminator(b"\r\n", max_length=7), "Terminator(b'\\r\\n', max_length=7)"),
        (Terminator(b"END"), "Terminator(b'END', max_length=65536)"),
        (LengthPrefixed(), "LengthPrefixed(4, 'big', max_length=65536)"),
        (LengthPrefixed(2, "little", max_length=9), "LengthPrefixed(2, 'little', max_length=9)"),
        (Fixed(3), "Fixed(3)"), (Chunk(5), "Chunk(max_length=5)"),
        (Framer(), "Framer(max_length=65536)"), (Netstring(), "Netstring(max_length=65536)"),
    ],
)
def test_repr_names_parameters(framer, text) -> None:
    assert repr(framer) == text
    if not isinstance(framer, Netstring) and type(framer) is not Framer:
        assert repr(eval(text, vars(framing))) == text  # and reads back as the same framer


def test_framebuffer_repr() -> None:
    fb = FrameBuffer(Line(max_length=10))
    fb.feed(b"abc")
    assert repr(fb) == "<FrameBuffer Line(max_length=10) buffered=3>"
