"""The S3 endpoint going away in the middle of `omnir1 data push` and `omnir1 data pull`: a
TCP proxy in front of a moto S3 server on 127.0.0.1 drops every connection once a byte budget
has passed and refuses new ones until restored. The transfer fails (after DVC's own retries)
with an error naming the remote, nothing in the local cache is corrupt, and the same command
completes once the endpoint is back, with the files dvc.lock records."""

import hashlib
import socket
import struct
import threading

import pytest
from test_dvc_remote import _env, _md5s, _params, _project, dvc, endpoint, omnir1

pytestmark = pytest.mark.slow
BUCKET = "omnir1-dvc-faults"  # moto's state is per process: not test_dvc_remote's bucket
__all__ = ["endpoint"]  # the moto server fixture


class FlakyProxy:
    """127.0.0.1 TCP proxy to `port`; `cut_after(n)`: after n more bytes (either way) every
    connection is dropped and new ones are closed at once, until `restore()`."""

    def __init__(self, port: int):
        self.target = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.lock = threading.Lock()
        self.left: int | None = None  # bytes until the cut; None: no limit
        self.broken = False
        self.open: list[socket.socket] = []
        self.cuts = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def cut_after(self, nbytes: int) -> None:
        with self.lock:
            self.left, self.broken = nbytes, False

    def restore(self) -> None:
        with self.lock:
            self.left, self.broken = None, False

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                broken = self.broken
            if broken:
                _reset(client)
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target))
            with self.lock:
                self.open += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                with self.lock:
                    if self.left is not None:
                        self.left -= len(data)
                        if self.left < 0 and not self.broken:
                            self.broken, self.cuts = True, self.cuts + 1
                            for s in self.open:  # drop everything in flight
                                _reset(s)
                            self.open.clear()
                    if self.broken:
                        return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                s.close()

    def close(self) -> None:
        self.listener.close()


def _reset(sock: socket.socket) -> None:
    """Drop a connection with a TCP reset, as a vanished endpoint's network does; shutdown
    first, which also wakes a thread blocked reading it (close alone would not)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


def _cache_is_sound(project) -> int:
    """Every file object in the DVC cache has the md5 its name says; returns how many."""
    objects = [
        p
        for p in (project / ".dvc" / "cache" / "files" / "md5").rglob("*")
        if p.is_file() and not p.name.endswith(".dir")
    ]
    for path in objects:
        name = path.parent.name + path.name
        assert hashlib.md5(path.read_bytes()).hexdigest() == name, path
    return len(objects)


def test_push_and_pull_survive_the_endpoint_going_away(endpoint, tmp_path):
    proxy = FlakyProxy(int(endpoint.rsplit(":", 1)[1]))
    env = _env(AWS_ENDPOINT_URL=proxy.url)
    first = _project(tmp_path / "first", _params(url=f"s3://{BUCKET}/cache"))
    dvc(first, env, "init", "--no-scm", "-q")
    dvc(first, env, "repro", "data@refavs")
    made = omnir1(first, env, "data", "remote", "--create-bucket")
    assert made.returncode == 0, made.stderr
    try:
        proxy.cut_after(150_000)  # part of the upload, then the endpoint is gone
        failed = omnir1(first, env, "data", "push")
        assert failed.returncode == 2 and proxy.cuts == 1, failed.stdout + failed.stderr
        assert f"s3://{BUCKET}/cache" in failed.stderr and "dvc push failed" in failed.stderr
        assert "Traceback" not in failed.stderr
        proxy.restore()
        pushed = omnir1(first, env, "data", "push")  # the rest goes up
        assert pushed.returncode == 0, pushed.stderr

        clone = _project(tmp_path / "clone", _params(url=f"s3://{BUCKET}/cache"))
        for name in ("dvc.lock", ".dvc/config"):
            (clone / name).parent.mkdir(exist_ok=True)
            (clone / name).write_bytes((first / name).read_bytes())
        proxy.cut_after(150_000)  # part of the download
        failed = omnir1(clone, env, "data", "pull", "data@refavs")
        assert failed.returncode == 2 and proxy.cuts == 2, failed.stdout + failed.stderr
        assert "dvc pull failed" in failed.stderr
        got = _cache_is_sound(clone)  # whatever arrived is whole
        expected = len(set(_md5s(first / "data/sets/refavs").values()))  # distinct contents
        assert got < expected
        proxy.restore()
        pulled = omnir1(clone, env, "data", "pull", "data@refavs")
        assert pulled.returncode == 0, pulled.stderr
        assert _md5s(clone / "data/sets/refavs") == _md5s(first / "data/sets/refavs")
        assert _cache_is_sound(clone) == expected
    finally:
        proxy.close()
