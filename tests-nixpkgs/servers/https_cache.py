"""A binary cache over HTTPS for the end-to-end tests.

Usage: https_cache.py PORT DIR CERT KEY [USER:PASSWORD]

Serves the files of DIR on 127.0.0.1:PORT over TLS with the certificate chain CERT and its key
KEY. With USER:PASSWORD, every request without that HTTP basic login gets 401. Each request is
logged to standard error as "STATUS PATH".
"""

import base64
import functools
import http.server
import ssl
import sys

port, directory, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
login = sys.argv[5] if len(sys.argv) > 5 else None
expected = "Basic " + base64.b64encode(login.encode()).decode() if login else None


class Handler(http.server.SimpleHTTPRequestHandler):
    def log_request(self, code="-", size="-"):
        sys.stderr.write(f"{code} {self.path}\n")
        sys.stderr.flush()

    def log_message(self, *args):
        pass

    def allowed(self):
        if expected is None or self.headers.get("Authorization") == expected:
            return True
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Basic realm="cache"')
        self.send_header("Content-Length", "0")
        self.end_headers()
        return False

    def do_GET(self):
        if self.allowed():
            super().do_GET()

    def do_HEAD(self):
        if self.allowed():
            super().do_HEAD()


class Server(http.server.ThreadingHTTPServer):
    request_queue_size = 1024
    daemon_threads = True

    def get_request(self):
        sock, addr = super().get_request()
        # The handshake runs in the request's thread, so a client that fails it (a refused
        # certificate) holds up no other.
        return context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def handle_error(self, request, client_address):
        sys.stderr.write(f"failed {sys.exc_info()[1]}\n")
        sys.stderr.flush()


context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server = Server(("127.0.0.1", port), functools.partial(Handler, directory=directory))
server.serve_forever()
