"""A Sphinx extension: connect to sphinxcontrib-katex's node server until it listens.

sphinxcontrib-katex starts ``node katex-server.js``, waits for its socket file to appear and
connects once. The file appears when the server binds, a moment before it listens; on a busy
machine (the 2-core build machine while tests ran) the one connection can fall in that moment,
is refused, and the whole build stops at its first page with maths. This start connects again
until the server listens, within the same time limit. Loaded from _config.yml:
``local_extensions``.
"""

import socket
import time
from subprocess import PIPE, Popen

from sphinxcontrib.katex import KaTeXServer

POLL_SECONDS = 0.01


def start_server_process(cls, rundir, timeout):
    """``(process, connected socket)`` of a new KaTeX server in ``rundir``; waits at most ``timeout`` seconds."""
    socket_path = rundir / "katex.sock"
    process = Popen(cls.build_command(socket=socket_path), stdin=PIPE, stdout=PIPE, cwd=rundir)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if socket_path.is_socket():
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(socket_path))
                return process, sock
            except ConnectionRefusedError:  # bound, not yet listening
                sock.close()
        time.sleep(POLL_SECONDS)
    process.kill()
    raise cls.timeout_error(timeout)


def setup(app):
    KaTeXServer.start_server_process = classmethod(start_server_process)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
