"""A hostile pacserve peer for tests: answers every query HAVE and serves a bad file.

Usage: hostile_peer.py MODE REAL_FILE LOG
MODE: wrongbytes (right size, flipped bytes), wrongsize (claims and serves 100 bytes more),
truncated (right size announced, corrupt bytes, connection closed halfway), html (an HTML error
page with status 200), stall (the right bytes, but only half, then silence), 404 (HAVE, then
404 Not Found).
Modes for the limits of issue 10: endless-chunked / endless-close (a body that never ends,
chunked or close-delimited), drip (the right bytes, honouring Range, one byte a second),
drip-headers (the response head one byte a second), continue (`100 Continue` forever),
silent (accepts, reads the request, never answers), garbage-stall (ignores Range: a 200 with
192 garbage bytes, then silence).
short-close (1000 wrong bytes of a full-length answer, then the connection closes),
slow-garbage (a full-length answer of wrong bytes at 70 KB/s).
honest: the right bytes (honouring Range) -- with the default protocol, a version 1 daemon.
wrongtail: the right size, the right bytes up to HOSTILE_AT (a fraction of the file, default 0.9),
flipped bytes after it (a peer that lies at the end); dies: the right bytes up to HOSTILE_AT, then
the connection closes (a peer switched off mid-file: a range past HOSTILE_AT is cut there, one
before it is served whole); slow: the right bytes at 70 KB/s, just above a client's speed floor.
All three honour Range, open (`bytes=A-`) or closed (`bytes=A-B`).
sig-drip: a version 3 daemon (answers v3 queries only) saying SIG: the package honestly (honouring
Range), its signature (REAL_FILE.sig) two bytes a second; a query for the .sig is answered with
the signature's size.
Protocol: version 1 (answers v1 queries only, HAVE) unless HOSTILE_GROWING=1: then it answers
only version 2 and 3 queries, each in its version, GROWING ("in progress, half of the bytes
landed").
Environment: HOSTILE_ID (hex daemon id to answer with), HOSTILE_IDS (answers per source
address, each under its own id), HOSTILE_FROM (extra source addresses, comma-separated, bound
with port 15678; HOSTILE_ONLY_EXTRA=1 answers from those alone), HOSTILE_HTTP_PORT (port announced and served, default 15680),
HOSTILE_LIFETIME (seconds it runs, default 120), HOSTILE_POKE (an address whose daemon is sent a query every second, so that it hears another host
on the LAN and claims its downloads), HOSTILE_CLAIMS_ONLY=1 (with HOSTILE_GROWING: answer only
queries that carry the CLAIM flag, so that only daemons, never clients, follow it),
HOSTILE_V5_LINK (with HOSTILE_GROWING: also answer version 5 queries, telling this link speed in
Mbit/s, e.g. 65535 to look faster than every copy).
Every query and request is appended to LOG, and "SENT <n>" with the body bytes each response
sent. Stops after HOSTILE_LIFETIME seconds.
"""
import os, socket, struct, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

mode, real, log_path = sys.argv[1], sys.argv[2], sys.argv[3]
good = open(real, "rb").read()
# bytes.translate: a 160 MB package flipped in a moment, where a generator took minutes.
bad = good.translate(bytes(b ^ 0x5A for b in range(256)))
at = int(len(good) * float(os.environ.get("HOSTILE_AT", "0.9")))
if mode in ("honest", "sig-drip", "dies", "slow"):
    bad = good
if mode == "wrongtail":
    bad = good[:at] + bad[at:]
sig_drip = mode == "sig-drip"
signature = open(real + ".sig", "rb").read() if sig_drip else b""
if mode == "wrongsize":
    bad = bad + b"x" * 100
claimed = len(bad) if mode == "wrongsize" else len(good)
http_port = int(os.environ.get("HOSTILE_HTTP_PORT", "15680"))
ids_per_source = int(os.environ.get("HOSTILE_IDS", "1"))
fixed_id = bytes.fromhex(os.environ["HOSTILE_ID"]) if os.environ.get("HOSTILE_ID") else None
growing = os.environ.get("HOSTILE_GROWING") == "1"
extra_sources = [a for a in os.environ.get("HOSTILE_FROM", "").split(",") if a]

def log(line):
    with open(log_path, "a") as f:
        f.write(line + "\n")

def byte_range(headers):
    """`Range: bytes=A-` or `bytes=A-B` as (A, B or None); (0, None) for none."""
    value = headers.get("Range") or ""
    if value.startswith("bytes=") and "-" in value:
        first, last = value[6:].split("-", 1)
        return int(first), (int(last) if last else None)
    return 0, None

def range_start(headers):
    return byte_range(headers)[0]

class Handler(BaseHTTPRequestHandler):
    def raw(self):
        """The limits modes speak raw HTTP/1.1; returns body bytes sent."""
        out = self.wfile
        sent = 0
        deadline = time.time() + 60
        try:
            if mode in ("endless-chunked", "endless-close"):
                chunked = mode == "endless-chunked"
                head = "HTTP/1.1 200 OK\r\n" + ("Transfer-Encoding: chunked\r\n" if chunked else "") + "Connection: close\r\n\r\n"
                out.write(head.encode())
                block = bad[:65536] or b"x" * 65536
                while time.time() < deadline:
                    out.write((b"%x\r\n" % len(block) + block + b"\r\n") if chunked else block)
                    sent += len(block)
            elif mode == "drip":
                start = range_start(self.headers)
                status = "206 Partial Content" if start else "200 OK"
                head = "HTTP/1.1 %s\r\nContent-Length: %d\r\n" % (status, len(good) - start)
                if start:
                    head += "Content-Range: bytes %d-%d/%d\r\n" % (start, len(good) - 1, len(good))
                out.write((head + "Connection: close\r\n\r\n").encode())
                for b in good[start:]:
                    if time.time() > deadline:
                        break
                    out.write(bytes([b]))
                    out.flush()
                    sent += 1
                    time.sleep(1)
            elif mode == "sig-drip":
                out.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(signature))
                out.flush()
                for b in signature:
                    if time.time() > deadline:
                        break
                    out.write(bytes([b]))
                    out.flush()
                    sent += 1
                    time.sleep(0.5)
            elif mode == "drip-headers":
                head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n" % len(good) + b"X-Pad: " + b"a" * 200
                for b in head:
                    if time.time() > deadline:
                        break
                    out.write(bytes([b]))
                    out.flush()
                    time.sleep(1)
            elif mode == "continue":
                while time.time() < deadline:
                    out.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                    out.flush()
                    time.sleep(0.5)
            elif mode == "garbage-stall":
                head = "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(good)
                out.write(head.encode() + bad[:192])
                out.flush()
                sent = 192
                time.sleep(60)
            elif mode in ("silent", "spoof"):
                time.sleep(60)
            elif mode in ("short-close", "slow-garbage"):
                head = "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(good)
                out.write(head.encode())
                if mode == "short-close":
                    out.write(bad[:1000])
                    sent = 1000
                else:
                    while sent < len(bad) and time.time() < deadline:
                        out.write(bad[sent : sent + 7000])
                        out.flush()
                        sent += 7000
                        time.sleep(0.1)
        except OSError:
            pass
        return sent

    def do_GET(self):
        log("GET " + self.path + " " + str(self.headers.get("Range")))
        if mode in ("endless-chunked", "endless-close", "drip", "drip-headers", "continue", "garbage-stall", "silent", "spoof", "short-close", "slow-garbage") or (sig_drip and self.path.endswith(".sig")):
            log("SENT %d" % self.raw())
            return
        if mode == "404":
            self.send_error(404)
            return
        if mode == "stall":
            self.send_response(200)
            self.send_header("Content-Length", str(len(good)))
            self.end_headers()
            self.wfile.write(good[: len(good) // 2])
            self.wfile.flush()
            time.sleep(60)
            return
        if mode == "html":
            page = b"<html><body>Service temporarily unavailable</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)
            return
        ranged = mode in ("honest", "sig-drip", "wrongtail", "dies", "slow")
        start, last = byte_range(self.headers) if ranged else (0, None)
        end = len(bad) if last is None else min(last + 1, len(bad))
        if start or last is not None:
            self.send_response(206)
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, end - 1, len(bad)))
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(end - start))
        self.end_headers()
        if mode == "dies" and end > at:
            # Switched off at byte `at`: whatever range was asked for stops there.
            try:
                self.wfile.write(bad[start:max(at, start)])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            log("SENT %d" % max(at - start, 0))
            return
        if mode == "slow":
            # The right bytes, just above a client's speed floor (64 KiB/s).
            try:
                for at_byte in range(start, end, 7000):
                    self.wfile.write(bad[at_byte:min(at_byte + 7000, end)])
                    self.wfile.flush()
                    time.sleep(0.1)
            except OSError:
                pass
            return
        if mode == "dies":
            self.wfile.write(bad[start:end])
            log("SENT %d" % (end - start))
            return
        if mode == "truncated":
            self.wfile.write(bad[: len(bad) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(bad[start:end])

    def log_message(self, *args):
        pass

class Server(ThreadingHTTPServer):
    daemon_threads = True

if http_port >= 1024 or os.geteuid() == 0:
    http = Server(("0.0.0.0", http_port), Handler)
    threading.Thread(target=http.serve_forever, daemon=True).start()

udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
udp.bind(("0.0.0.0", 15678))
for ifaddr in sys.argv[4:]:
    mreq = socket.inet_aton("239.255.15.78") + socket.inet_aton(ifaddr)
    udp.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
udp.settimeout(0.5)
senders = [udp]
for addr in extra_sources:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, 15678))
    senders.append(s)
if os.environ.get("HOSTILE_ONLY_EXTRA"):
    senders = senders[1:]
v5 = os.environ.get("HOSTILE_V5_LINK") is not None
v5_link = int(os.environ.get("HOSTILE_V5_LINK", "0"))
poke = os.environ.get("HOSTILE_POKE")
if poke:
    def poking():
        name = b"poke-1-1-any.pkg.tar.zst"
        query = (b"PSRV\x02\x01" + b"pokepoke" + bytes([len(name)]) + name + b"\x00" + b"\x00" * 9).ljust(64, b"\x00")
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        end = time.time() + 120
        while time.time() < end:
            s.sendto(query, (poke, 15678))
            time.sleep(1)
    threading.Thread(target=poking, daemon=True).start()
print("ready", flush=True)
deadline = time.time() + float(os.environ.get("HOSTILE_LIFETIME", "120"))
while time.time() < deadline:
    try:
        data, src = udp.recvfrom(2048)
    except socket.timeout:
        continue
    versions = ((2, 3, 5) if v5 else (2, 3)) if growing else (3,) if sig_drip else (1,)
    if len(data) < 64 or data[:4] != b"PSRV" or data[4] not in versions or data[5] != 1:
        continue
    version = data[4]
    nonce = data[6:14]
    n = data[14]
    name = data[15 : 15 + n].decode(errors="replace")
    log("QUERY " + name)
    arch_at = 15 + n
    claim = growing and len(data) > arch_at + 1 + data[arch_at] and data[arch_at + 1 + data[arch_at]] == 1
    if os.environ.get("HOSTILE_CLAIMS_ONLY") and not claim:
        continue
    n_answer = 0
    for sender in senders:
        for i in range(ids_per_source):
            daemon_id = fixed_id or (b"HOSTILE!" if ids_per_source == 1 and sender is udp else struct.pack(">HHI", 0x4845, n_answer, 0x53544C45))
            n_answer += 1
            if sig_drip:
                size = len(signature) if name.endswith(".sig") else claimed
                answer = b"PSRV\x03\x02" + nonce + b"\x01" + daemon_id + struct.pack(">HQQQBH", http_port, size, 1700000000, size, 1, 0)
            elif growing:
                answer = b"PSRV" + bytes([version, 2]) + nonce + b"\x02" + daemon_id + struct.pack(">HQQQ", http_port, claimed, 0, claimed // 2)
                if version >= 3:
                    answer += b"\x00\x00\x00"
                if version >= 5:
                    answer += struct.pack(">H", v5_link)
            else:
                answer = b"PSRV\x01\x02" + nonce + b"\x01" + daemon_id + struct.pack(">HQQ", http_port, claimed, 1700000000)
            sender.sendto(answer, src)
