"""Hand a dict daemon's sockets to its successor, so that a restart makes no lookup fail.

Why: Dovecot writes the key of a dict lookup that fails into its log, and the key of doveauth's
creating lookup holds a password. A restart (``supervisorctl restart``, ``up`` after a
chatmail.ini change, an upgrade) used to leave a gap between the old process closing its socket
and the new one binding it, and a lookup that Dovecot sent on a connection just as the old
process closed it failed too (Dovecot retries only commands it could not send at all).

How: when a daemon stops, it starts a small *keeper* process (this module, run as ``python -m
chatmaild.handoff``) and passes it the listening socket and then, one by one, each client
connection once it is at a clean point (every request answered, no half-received line, no open
transaction). Nothing is closed under Dovecot's feet: what Dovecot sends meanwhile waits in the
kernel's buffers, and new connects wait in the listening socket's backlog. The next daemon on the
same path asks the keeper over ``<socket>.handoff`` (mode 0600, same user or root only) and gets
all of them (SCM_RIGHTS), then answers what queued up. If no successor comes within ``grace``
seconds after the old daemon exited (a plain stop), the keeper closes everything, removes the
socket path and exits: Dovecot's lookups then fail as they would without it.

The keeper runs as the daemon's user, writes nothing but its socket file, and logs nothing (its
predecessor's log pipe may be gone). Under systemd, socket activation would do the first half.
"""

from __future__ import annotations

import contextlib
import grp
import os
import selectors
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The keeper waits at most this long for its predecessor to exit (it drains for up to 8 s).
PREDECESSOR_SECONDS = 15.0
# A successor waits this long for the keeper's answer (the predecessor may still be draining).
ADOPT_TIMEOUT = PREDECESSOR_SECONDS + 5.0
SCM_MAX_FD = 250  # the kernel passes at most 253 descriptors in one message
LISTENER, CONNECTIONS, END, ACK = b"L", b"C", b"E", b"k"


def handoff_path(path: Path) -> Path:
    return path.with_name(path.name + ".handoff")


def group_id(group: str) -> int:
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise OSError(f"no such group {group!r}") from None


def bind_private(path: Path, mode: int, group: str | None = None) -> socket.socket:
    """A Unix socket bound at ``path`` with ``mode`` from the first moment, umask untouched.

    It is bound inside a fresh 0700 directory, given its mode (and group), then renamed into
    place, so nobody can connect before its permissions are final. The process umask is not
    changed: that would race with every other thread creating files.
    """
    tmpdir = tempfile.mkdtemp(prefix=".bind.", dir=path.parent)
    tmp = os.path.join(tmpdir, "s")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(tmp)
        os.chmod(tmp, mode)
        if group is not None:
            os.chown(tmp, -1, group_id(group))
        os.rename(tmp, path)
    except BaseException:
        sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    finally:
        os.rmdir(tmpdir)
    return sock


# -- the successor ------------------------------------------------------------------------------


def adopt(path: Path) -> tuple[socket.socket, list[socket.socket]] | None:
    """The listening socket and connections a stopped predecessor left, or None if none."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as conn:
        conn.settimeout(ADOPT_TIMEOUT)
        try:
            conn.connect(str(handoff_path(path)))
            if not _trusted_peer(conn):
                return None
            socks = _receive_all(conn)
        except OSError:  # no keeper (the usual first start), or it went away
            return None
        if socks is None or not socks or not _is_listener(socks[0]):
            for sock in socks or ():
                sock.close()
            return None
        with contextlib.suppress(OSError):
            conn.sendall(ACK)  # the keeper may go: we hold everything now
        return socks[0], socks[1:]


def _trusted_peer(conn: socket.socket) -> bool:
    """Only a process of our own user (or root) may hand us sockets, or take them."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
    return int.from_bytes(creds[4:8], sys.byteorder) in (os.getuid(), 0)


def _receive_all(conn: socket.socket) -> list[socket.socket] | None:
    """Every socket the keeper sends, up to its END; None (all closed) if it stops short."""
    socks: list[socket.socket] = []
    try:
        while True:
            msg, fds, _flags, _addr = socket.recv_fds(conn, 16, SCM_MAX_FD)
            for fd in fds:
                os.set_inheritable(fd, False)
                socks.append(socket.socket(fileno=fd))
            if msg == END:
                return socks
            if msg == b"":
                raise ConnectionError("the keeper stopped before its END")
    except BaseException:
        for sock in socks:
            sock.close()
        raise


def _is_listener(sock: socket.socket) -> bool:
    return (
        sock.family == socket.AF_UNIX
        and sock.type == socket.SOCK_STREAM
        and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
    )


# -- the stopping daemon ------------------------------------------------------------------------


class Keeper:
    """The stopping daemon's end: give connections to the keeper process as they settle."""

    def __init__(self, proc: subprocess.Popen, channel: socket.socket) -> None:
        self.proc = proc
        self._channel = channel
        channel.setblocking(False)  # a slow keeper must never stall the event loop

    def give(self, socks: list[socket.socket]) -> bool | None:
        """Pass up to SCM_MAX_FD connections on in one message.

        True: passed (the caller lets go of them). None: the keeper is busy, try again later.
        False: the keeper is gone.
        """
        try:
            socket.send_fds(self._channel, [CONNECTIONS], [s.fileno() for s in socks])
        except BlockingIOError:
            return None
        except OSError:
            return False
        return True

    def done(self) -> None:
        """Nothing more comes: the keeper may hand everything to a successor now."""
        self._channel.close()


def spawn_keeper(listener: socket.socket, path: Path, grace: float) -> Keeper | None:
    """Start a keeper holding ``listener`` for a successor; None if grace is 0 or it failed."""
    if grace <= 0:
        return None
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    fds = (listener.fileno(), theirs.fileno())
    argv = [str(path), *map(str, fds), str(grace)]
    try:
        proc = subprocess.Popen(
            # -P and cwd /: a chatmaild/ in the daemon's working directory is never imported
            [sys.executable, "-P", "-m", "chatmaild.handoff", *argv],
            pass_fds=fds,
            cwd="/",
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C or group signal meant for the daemon misses it
        )
    except OSError:
        ours.close()
        return None
    finally:
        theirs.close()
    return Keeper(proc, ours)


# -- the keeper process -------------------------------------------------------------------------


class _Held:
    def __init__(self, listener: socket.socket) -> None:
        self.listener = listener
        self.conns: list[socket.socket] = []
        self.given = False  # the listener went out to a successor (maybe without its ACK)

    def close(self) -> None:
        for sock in (self.listener, *self.conns):
            sock.close()


def keep(path: Path, listener: socket.socket, channel: socket.socket, grace: float) -> None:
    """Collect connections from the predecessor, then hand all to a successor, or give up."""
    held = _Held(listener)
    path_id = _file_id(path)
    if path_id is None:
        held.close()
        return  # someone removed the socket: nothing to keep
    hpath = handoff_path(path)
    server, handoff_id = _listen_private(hpath)
    try:
        _serve(server, channel, held, grace)
    finally:
        if _file_id(hpath) == handoff_id:  # not yet a later keeper's
            hpath.unlink(missing_ok=True)
        # Nobody took the socket: remove its name, as the daemon would have, and before
        # closing it, so that a daemon starting now binds a new one instead of finding ours
        # dying. Once the listener went out, the path is never removed: it may be served.
        if not held.given and _file_id(path) == path_id:
            path.unlink(missing_ok=True)
        server.close()
        held.close()


def _listen_private(hpath: Path) -> tuple[socket.socket, tuple[int, int] | None]:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    tmp = hpath.with_name(f"{hpath.name}.{os.getpid()}")
    old_umask = os.umask(0o177)  # this process has one thread: 0600 from the start
    try:
        server.bind(str(tmp))
    finally:
        os.umask(old_umask)
    os.rename(tmp, hpath)
    server.listen(4)
    return server, _file_id(hpath)


def _serve(server: socket.socket, channel: socket.socket, held: _Held, grace: float) -> bool:
    """Until the predecessor is done, collect; then hand over to the first successor."""
    sel = selectors.DefaultSelector()
    sel.register(channel, selectors.EVENT_READ)
    sel.register(server, selectors.EVENT_READ)  # successors queue here, never bind their own
    predecessor_done = False
    deadline = time.monotonic() + PREDECESSOR_SECONDS
    waiting: list[socket.socket] = []
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                if predecessor_done:
                    return False
                predecessor_done, deadline = True, time.monotonic() + grace  # it hangs: go on
            for key, _ in sel.select(max(left, 0)):
                if key.fileobj is server:
                    waiting.append(server.accept()[0])
                elif not _collect(channel, held):  # EOF: it exited, or gave everything
                    sel.unregister(channel)
                    predecessor_done, deadline = True, time.monotonic() + grace
            while predecessor_done and waiting:
                if _hand_over(waiting.pop(0), held):
                    return True
    finally:
        for conn in waiting:
            conn.close()
        sel.close()


def _collect(channel: socket.socket, held: _Held) -> bool:
    try:
        msg, fds, _flags, _addr = socket.recv_fds(channel, 16, SCM_MAX_FD)
    except OSError:
        return False
    held.conns += [socket.socket(fileno=fd) for fd in fds]
    return msg != b""


def _hand_over(conn: socket.socket, held: _Held) -> bool:
    with conn:
        conn.settimeout(5)
        if not _trusted_peer(conn):
            return False
        try:
            socket.send_fds(conn, [LISTENER], [held.listener.fileno()])
        except OSError:
            return False
        # From here on the successor may hold the listener: whatever happens, this keeper is
        # done, and must neither give it to another nor remove the socket's name.
        held.given = True
        with contextlib.suppress(OSError):
            for i in range(0, len(held.conns), SCM_MAX_FD):
                batch = held.conns[i : i + SCM_MAX_FD]
                socket.send_fds(conn, [CONNECTIONS], [s.fileno() for s in batch])
            conn.sendall(END)
            conn.recv(1)  # its ACK, or EOF if it failed: either way, it has what it took
        return True


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def main(argv: list[str]) -> int:
    path, listen_fd, channel_fd, grace = Path(argv[0]), int(argv[1]), int(argv[2]), float(argv[3])
    keep(path, socket.socket(fileno=listen_fd), socket.socket(fileno=channel_fd), grace)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
