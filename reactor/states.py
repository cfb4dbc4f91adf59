"""The state machine every request's record follows: its kinds, states, events and moves.

``TRANSITIONS`` is the whole of it: for each kind of record, which event
takes which state to which.  The request table (``reactor.table``) applies
it and nothing else; the docs' tables and diagrams are generated from it
and checked against it by the tests, so they cannot drift.
"""

from __future__ import annotations

import enum

__all__ = ["Kind", "State", "Event", "TRANSITIONS", "INITIAL_STATE", "FINAL_STATES"]


class _FastHash(enum.Enum):
    """An enum whose members hash by identity, in C.

    Every transition looks ``(state, event)`` up in a dict, several times per
    message; ``Enum.__hash__`` is a Python function (it hashes the name).
    Members are singletons, and equality is identity, so identity hashing
    is correct and takes the interpreter's fast path.
    """

    __hash__ = object.__hash__


class Kind(_FastHash):
    """What sort of request a record stands for."""

    STREAM = "stream"  # a connection whose socket a classic handler owns
    CONNECTION = "connection"  # a connection whose socket the reactor owns (framed handler)
    DATAGRAM = "datagram"  # one received datagram
    CHILD = "child"  # a forked child running a request (its peer is the pid)


class State(_FastHash):
    ACCEPTED = "accepted"  # a connection came out of accept(), not yet dispatched
    PROXYING = "proxying"  # PROXY protocol: the loop reads the proxy's header (back to ACCEPTED once read)
    HANDSHAKING = "handshaking"  # TLS: the handshake runs in the loop (back to ACCEPTED once secured)
    RECEIVED = "received"  # a datagram came out of recvfrom(), not yet dispatched
    READING = "reading"  # framed: waiting for the rest of a message
    READY = "ready"  # framed: a whole message is buffered, waiting for its turn
    PROCESSING = "processing"  # the handler is running (where: the dispatch strategy's choice)
    WRITING = "writing"  # framed: output above high water; not reading until it drains
    SENDING = "sending"  # datagram: the reply is queued until the socket is writable
    CLOSING = "closing"  # framed: sending what is queued, then closing
    CLOSED = "closed"  # final: the connection was shut down and closed
    DONE = "done"  # final: the datagram was handled
    FAILED = "failed"  # final: an exception escaped the lifecycle; handle_error saw it


class Event(_FastHash):
    DISPATCH = "dispatch"  # process_request() was called for it
    FINISH = "finish"  # the request is over (shutdown_request/close_request, or output flushed)
    REJECT = "reject"  # verify_request() said no
    ERROR = "error"  # an exception escaped process_request() or the handler
    START = "start"  # framed: the reactor starts reading the connection
    MESSAGE = "message"  # framed: a whole message has arrived
    REPLY = "reply"  # framed: the handler is done; its output is queued
    BACKLOG = "backlog"  # framed: queued output went above the high-water mark
    DRAINED = "drained"  # framed: queued output fell below the low-water mark
    EOF = "eof"  # framed: the peer will send no more (it half-closed or closed)
    CLOSE = "close"  # framed: close once the queued output is sent (asked, or a timeout)
    PROTOCOL = "protocol"  # framed: the peer broke the framing (e.g. a message too long)
    ABORT = "abort"  # close now, dropping queued output (peer reset, server closing, stuck writer)
    QUEUE = "queue"  # datagram: the reply could not be sent yet and waits in a queue
    SENT = "sent"  # datagram: the queued reply went out
    DROP = "drop"  # datagram: the reply was dropped (the queue was full, or the server closed)
    WAIT = "wait"  # every worker is busy: the request waits in the strategy's queue
    HANDSHAKE = "handshake"  # TLS: the server's handshake with the client begins
    SECURED = "secured"  # TLS: the handshake is done; the connection goes on as any other
    PROXY = "proxy"  # PROXY protocol: the connection's header from its proxy is awaited
    PROXIED = "proxied"  # PROXY protocol: the header is read; the record's peer is the real client


S, E = State, Event

_CONNECTION_LIVE = (S.ACCEPTED, S.PROXYING, S.HANDSHAKING, S.READING, S.READY, S.PROCESSING, S.WRITING, S.CLOSING)

# TLS (reactor/tls.py): the handshake, for a connection of either kind; one
# that fails, times out or is cut short is aborted (-abort-> CLOSED).
_HANDSHAKE = {
    (S.ACCEPTED, E.HANDSHAKE): S.HANDSHAKING,
    (S.HANDSHAKING, E.SECURED): S.ACCEPTED,
    (S.HANDSHAKING, E.ABORT): S.CLOSED,
}

# PROXY protocol (reactor/proxy.py): the proxy's header first, for a
# connection of either kind (before TLS: the header precedes the
# ClientHello); one that is invalid, late, from an untrusted peer or cut
# short is aborted (-abort-> CLOSED).
_PROXY = {
    (S.ACCEPTED, E.PROXY): S.PROXYING,
    (S.PROXYING, E.PROXIED): S.ACCEPTED,
    (S.PROXYING, E.ABORT): S.CLOSED,
}

#: The whole state machine: kind -> {(state, event): next state}.
TRANSITIONS: dict[Kind, dict[tuple[State, Event], State]] = {
    Kind.STREAM: {
        (S.ACCEPTED, E.WAIT): S.READY,
        (S.READY, E.DISPATCH): S.PROCESSING,
        (S.READY, E.ERROR): S.FAILED,
        (S.ACCEPTED, E.DISPATCH): S.PROCESSING,
        (S.ACCEPTED, E.REJECT): S.CLOSED,
        (S.ACCEPTED, E.ERROR): S.FAILED,
        (S.PROCESSING, E.FINISH): S.CLOSED,
        (S.PROCESSING, E.ERROR): S.FAILED,
        **_HANDSHAKE,
        **_PROXY,
    },
    Kind.CONNECTION: {
        **_PROXY,
        **_HANDSHAKE,
        (S.ACCEPTED, E.START): S.READING,
        (S.ACCEPTED, E.REJECT): S.CLOSED,
        (S.READING, E.MESSAGE): S.READY,
        (S.READY, E.DISPATCH): S.PROCESSING,
        (S.PROCESSING, E.REPLY): S.READING,
        (S.PROCESSING, E.BACKLOG): S.WRITING,
        (S.WRITING, E.DRAINED): S.READING,
        (S.READING, E.EOF): S.CLOSING,
        (S.READING, E.CLOSE): S.CLOSING,
        (S.READING, E.PROTOCOL): S.CLOSING,
        (S.WRITING, E.CLOSE): S.CLOSING,
        (S.CLOSING, E.FINISH): S.CLOSED,
        # From any live state: a reset peer or a closing server ends it now.
        **{(state, E.ABORT): S.CLOSED for state in _CONNECTION_LIVE},
        # An exception in the lifecycle fails it: the replies already made
        # still go out (CLOSING), then it ends FAILED, never CLOSED.
        **{(state, E.ERROR): S.CLOSING for state in (S.READING, S.READY, S.PROCESSING, S.WRITING)},
        (S.ACCEPTED, E.ERROR): S.FAILED,
        (S.CLOSING, E.ERROR): S.FAILED,
    },
    Kind.DATAGRAM: {
        (S.RECEIVED, E.WAIT): S.READY,
        (S.READY, E.DISPATCH): S.PROCESSING,
        (S.READY, E.ERROR): S.FAILED,
        (S.RECEIVED, E.DISPATCH): S.PROCESSING,
        (S.RECEIVED, E.REJECT): S.DONE,
        (S.RECEIVED, E.ERROR): S.FAILED,
        (S.PROCESSING, E.FINISH): S.DONE,
        (S.PROCESSING, E.ERROR): S.FAILED,
        (S.PROCESSING, E.QUEUE): S.SENDING,
        (S.SENDING, E.FINISH): S.SENDING,  # the handler is done; its reply still waits
        (S.SENDING, E.SENT): S.DONE,
        (S.SENDING, E.DROP): S.FAILED,
        (S.SENDING, E.ERROR): S.FAILED,
    },
    Kind.CHILD: {
        (S.PROCESSING, E.FINISH): S.DONE,
        (S.PROCESSING, E.ERROR): S.FAILED,
    },
}

#: Where each kind of record starts.
INITIAL_STATE = {
    Kind.STREAM: S.ACCEPTED,
    Kind.CONNECTION: S.ACCEPTED,
    Kind.DATAGRAM: S.RECEIVED,
    Kind.CHILD: S.PROCESSING,
}

#: States a record never leaves; reaching one removes it from the table.
FINAL_STATES = frozenset({S.CLOSED, S.DONE, S.FAILED})
