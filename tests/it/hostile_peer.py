"""A hostile pacserve peer for tests: answers every query HAVE and serves a bad file.

Usage: hostile_peer.py MODE REAL_FILE LOG
MODE: wrongbytes (right size, flipped bytes), wrongsize (claims and serves 100 bytes more),
truncated (right size announced, corrupt bytes, connection closed halfway), html (an HTML error
page with status 200), stall (the right bytes, but only half, then silence), 404 (HAVE, then
404 Not Found). Every query and request is appended to LOG. Stops after 120 s.
"""
import os, socket, struct, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

mode, real, log_path = sys.argv[1], sys.argv[2], sys.argv[3]
good = open(real, "rb").read()
bad = bytes(b ^ 0x5A for b in good)
if mode == "wrongsize":
    bad = bad + b"x" * 100
claimed = len(bad) if mode == "wrongsize" else len(good)

def log(line):
    with open(log_path, "a") as f:
        f.write(line + "\n")

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        log("GET " + self.path + " " + str(self.headers.get("Range")))
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
        self.send_response(200)
        self.send_header("Content-Length", str(len(bad)))
        self.end_headers()
        if mode == "truncated":
            self.wfile.write(bad[: len(bad) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(bad)

    def log_message(self, *args):
        pass

http = ThreadingHTTPServer(("0.0.0.0", 15680), Handler)
threading.Thread(target=http.serve_forever, daemon=True).start()

udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
udp.bind(("0.0.0.0", 15678))
for ifaddr in sys.argv[4:]:
    mreq = socket.inet_aton("239.255.15.78") + socket.inet_aton(ifaddr)
    udp.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
udp.settimeout(0.5)
print("ready", flush=True)
deadline = time.time() + 120
while time.time() < deadline:
    try:
        data, src = udp.recvfrom(2048)
    except socket.timeout:
        continue
    if len(data) < 64 or data[:6] != b"PSRV\x01\x01":
        continue
    nonce = data[6:14]
    n = data[14]
    name = data[15 : 15 + n].decode(errors="replace")
    log("QUERY " + name)
    answer = b"PSRV\x01\x02" + nonce + b"\x01" + b"HOSTILE!" + struct.pack(">HQQ", 15680, claimed, 1700000000)
    udp.sendto(answer, src)
