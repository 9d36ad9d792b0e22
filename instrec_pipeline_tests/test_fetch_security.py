"""What a manifest row can make fetch reach and take (FetchPolicy): one test per row of the security probe.

Local sources stay in the media root, http(s) reaches no internal address (first request, redirects, names
that resolve to one), downloads stop at max_bytes and at deadline_s. The servers listen on 127.0.0.1 and
every address involved is a loopback one, so nothing leaves the machine even if a guard failed.
"""

from __future__ import annotations

import http.server
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest

from instrec_pipeline.media.errors import MediaError
from instrec_pipeline.media.fetch import FetchPolicy, failure_category, fetch
from instrec_pipeline.media.partition import fetch_partition

LOOPBACK = FetchPolicy(allow_networks=("127.0.0.0/8",))
BODY = b"\x00\x01fake mp4 payload" * 1000


def _objects(raw: Path) -> list[Path]:
    return [p for p in raw.glob("??/*") if p.is_file()]


def _store_is_empty(raw: Path) -> bool:
    tmp = raw / ".tmp"
    return not _objects(raw) and not (tmp.exists() and list(tmp.iterdir())) and not (raw / "index").exists()


# --------------------------------------------------------------------------------------------------------
# Local sources
# --------------------------------------------------------------------------------------------------------


@dataclass
class Tree:
    media: Path
    secret: Path
    raw: Path


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    """``dataset/media`` with a clip, a symlink out of it and one within it; ``secret.mp4`` (0600) beside."""
    media = tmp_path / "dataset" / "media"
    (media / "sub").mkdir(parents=True)
    secret = tmp_path / "secret.mp4"
    secret.write_bytes(b"private bytes")
    secret.chmod(0o600)
    (media / "clip.mp4").write_bytes(b"clip bytes")
    (media / "out.mp4").symlink_to(secret)
    (media / "sub" / "alias.mp4").symlink_to(media / "clip.mp4")
    return Tree(media, secret, tmp_path / "raw")


ESCAPES = {
    "dotdot": "../../secret.mp4",
    "dotdot_etc_passwd": "../" * 30 + "etc/passwd",
    "dotdot_inside_path": "sub/../../../secret.mp4",
    "symlink_out": "out.mp4",
}


@pytest.mark.parametrize("case", list(ESCAPES))
def test_paths_escaping_the_media_root_are_refused(tree: Tree, case: str) -> None:
    with pytest.raises(MediaError, match=r"outside the media root \(.*\); set allow_absolute_paths") as exc:
        fetch(ESCAPES[case], tree.raw, media_root=tree.media)
    assert exc.value.video_id == ESCAPES[case] and failure_category(exc.value.reason) == "refused"
    assert _store_is_empty(tree.raw)


@pytest.mark.parametrize("source", ["/etc/passwd", "secret"])
def test_absolute_paths_are_refused(tree: Tree, source: str) -> None:
    source = str(tree.secret) if source == "secret" else source
    with pytest.raises(MediaError, match="absolute path refused .* set allow_absolute_paths") as exc:
        fetch(source, tree.raw, media_root=tree.media)
    assert failure_category(exc.value.reason) == "refused" and _store_is_empty(tree.raw)


def test_home_is_not_expanded(tree: Tree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / ".bashrc").write_text("export TOKEN=secret\n")
    monkeypatch.setenv("HOME", str(home))
    for policy in (None, FetchPolicy(allow_absolute_paths=True)):
        with pytest.raises(MediaError, match="file not found"):  # media/~/.bashrc, which is not there
            fetch("~/.bashrc", tree.raw, media_root=tree.media, policy=policy)
    assert _store_is_empty(tree.raw)


def test_allow_absolute_paths_lets_them_in_and_keeps_their_mode(tree: Tree) -> None:
    anywhere = FetchPolicy(allow_absolute_paths=True)
    outs = {
        fetch(s, tree.raw, media_root=tree.media, policy=anywhere) for s in ("../../secret.mp4", "out.mp4")
    }
    outs.add(fetch(str(tree.secret), tree.raw, policy=anywhere))
    (out,) = outs  # one object: the same bytes
    assert out.read_bytes() == b"private bytes"
    assert out.stat().st_mode & 0o777 == 0o600  # a 0600 file is not published 0644 by the copy
    # an index entry made while allowed does not serve the path once it is refused again
    with pytest.raises(MediaError, match="outside the media root"):
        fetch("../../secret.mp4", tree.raw, media_root=tree.media)


@pytest.mark.parametrize(("mode", "stored"), [(0o600, 0o600), (0o640, 0o640), (0o644, 0o644), (0o666, 0o644)])
def test_stored_copy_is_never_wider_than_its_source(tree: Tree, mode: int, stored: int) -> None:
    (tree.media / "clip.mp4").chmod(mode)
    assert fetch("clip.mp4", tree.raw, media_root=tree.media).stat().st_mode & 0o777 == stored


def test_paths_inside_the_root_still_work(
    tree: Tree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = fetch("clip.mp4", tree.raw, media_root=tree.media)
    assert fetch("sub/alias.mp4", tree.raw, media_root=tree.media) == out  # symlink within the root
    assert fetch("sub/../clip.mp4", tree.raw, media_root=tree.media) == out
    (tmp_path / "media-link").symlink_to(tree.media)  # a media root reached through a symlink
    assert fetch("clip.mp4", tree.raw, media_root=tmp_path / "media-link") == out
    monkeypatch.chdir(tree.media)  # no media root: the working directory, with the same rules
    assert fetch("clip.mp4", tree.raw) == out
    with pytest.raises(MediaError, match="outside the media root"):
        fetch("../../secret.mp4", tree.raw)


def test_fetch_partition_passes_the_policy(tree: Tree) -> None:
    table = pd.DataFrame({"video_id": ["in", "out"], "source": ["clip.mp4", str(tree.secret)]})
    with ThreadPoolExecutor(2) as pool:
        _, refused = fetch_partition(table, tree.raw, tree.media, pool)
        _, allowed = fetch_partition(table, tree.raw, tree.media, pool, policy=FetchPolicy(True))
    assert refused.processed == 1 and "absolute path refused" in refused.failed["out"]
    assert allowed.processed == 2 and not allowed.failed


# --------------------------------------------------------------------------------------------------------
# http(s): addresses, sizes, time
# --------------------------------------------------------------------------------------------------------


@dataclass
class Server:
    url: str  # http://127.0.0.1:<port>
    port: int
    requests: Counter[str] = field(default_factory=Counter)
    sent: Counter[str] = field(default_factory=Counter)  # body bytes written per path
    redirect_to: str = ""


@pytest.fixture
def start_server() -> Iterator[Callable[[], Server]]:
    """Starts loopback servers on demand; all are stopped (and their slow handlers woken) at the end."""
    stop = threading.Event()
    servers: list[http.server.ThreadingHTTPServer] = []

    def start() -> Server:
        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def _trickle(self, data: bytes, path: str) -> None:  # one byte a second
                for byte in data:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    server.sent[path] += 1
                    if stop.wait(1):
                        return

            def do_GET(self) -> None:
                path = self.path
                server.requests[path] += 1
                try:
                    if path == "/video.mp4":
                        self.send_response(200)
                        self.send_header("Content-Length", str(len(BODY)))
                        self.end_headers()
                        self.wfile.write(BODY)
                    elif path == "/hop":
                        self.send_response(302)
                        self.send_header("Location", server.redirect_to)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                    elif path == "/busy":
                        self.send_error(503, "busy")
                    elif path == "/slow-headers":
                        self._trickle(b"HTTP/1.0 200 OK\r\nContent-Length: 10\r\n\r\n0123456789", path)
                    elif path.startswith("/slow-body"):  # /slow-body (100 bytes announced), -no-length
                        self.send_response(200)
                        if path == "/slow-body":
                            self.send_header("Content-Length", "100")
                        self.end_headers()
                        self._trickle(b"x" * 100, path)
                    elif path.startswith("/huge"):  # 300 MB in 64 kB chunks, announced or not
                        self.send_response(200)
                        if path == "/huge-announced":
                            self.send_header("Content-Length", str(300 * 10**6))
                        self.end_headers()
                        chunk = bytes(1 << 16)
                        while server.sent[path] < 300 * 10**6 and not stop.is_set():
                            self.wfile.write(chunk)
                            server.sent[path] += len(chunk)
                    else:
                        self.send_error(404)
                except OSError:  # the client hung up, as these tests want it to
                    pass

        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        servers.append(httpd)
        port = httpd.server_address[1]
        server = Server(f"http://127.0.0.1:{port}", port)
        threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
        return server

    yield start
    stop.set()
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def server(start_server: Callable[[], Server]) -> Server:
    return start_server()


def test_loopback_is_refused_by_default_and_allowed_by_network(server: Server, tmp_path: Path) -> None:
    url = f"{server.url}/video.mp4"
    with pytest.raises(MediaError, match=r"127\.0\.0\.1 is a loopback address .*allow_networks") as exc:
        fetch(url, tmp_path / "raw")
    assert failure_category(exc.value.reason) == "refused" and exc.value.video_id == url
    with pytest.raises(MediaError, match="loopback"):
        fetch(url, tmp_path / "raw", policy=FetchPolicy(allow_networks=("10.0.0.0/8", "::1/128")))
    with pytest.raises(MediaError, match="loopback"):  # https connects through the same check
        fetch(f"https://127.0.0.1:{server.port}/video.mp4", tmp_path / "raw")
    assert server.requests["/video.mp4"] == 0 and _store_is_empty(tmp_path / "raw")  # never connected
    assert fetch(url, tmp_path / "raw", policy=LOOPBACK).read_bytes() == BODY
    assert server.requests["/video.mp4"] == 1


def test_a_name_resolving_to_loopback_is_refused(server: Server, tmp_path: Path) -> None:
    url = f"http://localhost:{server.port}/video.mp4"
    with pytest.raises(
        MediaError, match=r"refusing to connect to 'localhost': (127\.0\.0\.1|::1) is a loopback"
    ):
        fetch(url, tmp_path / "raw")
    assert server.requests["/video.mp4"] == 0 and _store_is_empty(tmp_path / "raw")
    assert fetch(url, tmp_path / "raw", policy=FetchPolicy(allow_hosts=("LocalHost.",))).read_bytes() == BODY


@pytest.mark.parametrize("target", ["127.0.0.1", "[::ffff:127.0.0.1]", "[::1]"])
def test_a_redirect_to_an_address_not_allowed_is_refused(
    start_server: Callable[[], Server], tmp_path: Path, target: str
) -> None:
    first, second = start_server(), start_server()
    first.redirect_to = f"http://{target}:{second.port}/video.mp4"
    only_first = FetchPolicy(allow_hosts=("localhost",))  # the first server by name; the IP is not allowed
    with pytest.raises(MediaError, match="is a (loopback|reserved|private) address") as exc:
        fetch(f"http://localhost:{first.port}/hop", tmp_path / "raw", policy=only_first)
    assert failure_category(exc.value.reason) == "refused"
    assert first.requests["/hop"] == 1 and second.requests["/video.mp4"] == 0
    assert _store_is_empty(tmp_path / "raw")
    if target == "127.0.0.1":  # the same redirect within allowed networks is followed
        assert fetch(f"{first.url}/hop", tmp_path / "raw", policy=LOOPBACK).read_bytes() == BODY


@pytest.mark.parametrize("path", ["/slow-body", "/slow-body-no-length", "/slow-headers"])
def test_a_one_byte_per_second_answer_stops_at_the_deadline(
    server: Server, tmp_path: Path, path: str
) -> None:
    policy = FetchPolicy(allow_networks=("127.0.0.0/8",), deadline_s=2)
    t0 = time.monotonic()
    with pytest.raises(MediaError, match=r"no complete download within deadline_s=2 s") as exc:
        fetch(f"{server.url}{path}", tmp_path / "raw", policy=policy, retries=3, timeout=30)
    assert 2 <= time.monotonic() - t0 < 4  # not 4 attempts × 30 s per read, nor 100 s for the body
    assert failure_category(exc.value.reason) == "deadline"
    assert server.requests[path] == 1 and _store_is_empty(tmp_path / "raw")


def test_retries_and_back_off_stop_at_the_deadline(server: Server, tmp_path: Path) -> None:
    policy = FetchPolicy(allow_networks=("127.0.0.0/8",), deadline_s=1.5)
    t0 = time.monotonic()
    with pytest.raises(MediaError, match=r"within deadline_s=1\.5 s \(last error: HTTP 503"):
        fetch(f"{server.url}/busy", tmp_path / "raw", policy=policy, retries=20, backoff=0.5)
    assert 1.5 <= time.monotonic() - t0 < 3.5 and 2 <= server.requests["/busy"] <= 4


@pytest.mark.parametrize(("path", "said"), [("/huge", "at least"), ("/huge-announced", "Content-Length")])
def test_a_300_mb_body_stops_at_max_bytes(server: Server, tmp_path: Path, path: str, said: str) -> None:
    policy = FetchPolicy(allow_networks=("127.0.0.0/8",), max_bytes=10**6)
    t0 = time.monotonic()
    with pytest.raises(MediaError, match=f"larger than max_bytes=1000000 \\({said} ") as exc:
        fetch(f"{server.url}{path}", tmp_path / "raw", policy=policy, retries=3)
    assert time.monotonic() - t0 < 4 and failure_category(exc.value.reason) == "too-large"
    assert server.requests[path] == 1  # not retried
    time.sleep(0.2)  # let the server notice the hang-up
    assert server.sent[path] < 50 * 10**6  # read up to the limit (plus socket buffers), not 300 MB
    assert _store_is_empty(tmp_path / "raw")
    assert fetch(f"{server.url}/video.mp4", tmp_path / "raw", policy=policy).read_bytes() == BODY  # under it


# --------------------------------------------------------------------------------------------------------
# The policy itself
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"allow_networks": ("10.0.0.0/33",)}, "allow_networks: '10.0.0.0/33'"),
     ({"allow_networks": ("intranet",)}, "allow_networks: 'intranet'"),
     ({"allow_networks": ("10.1.2.3/8",)}, "host bits set"),
     ({"allow_networks": "127.0.0.0/8"}, "sequence of strings"),
     ({"allow_hosts": "localhost"}, "sequence of strings"),
     ({"max_bytes": -1}, "max_bytes"), ({"max_bytes": 0}, "max_bytes"), ({"max_bytes": 1.5}, "max_bytes"),
     ({"deadline_s": -1}, "deadline_s"), ({"deadline_s": 0}, "deadline_s"),
     ({"deadline_s": float("inf")}, "deadline_s"), ({"deadline_s": float("nan")}, "deadline_s")],
)  # fmt: skip
def test_policy_validation(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FetchPolicy(**kwargs)


def test_policy_normalises_and_compares() -> None:
    policy = FetchPolicy(allow_hosts=[" Mirror.Example. "], allow_networks=["10.0.0.0/8"])  # type: ignore[arg-type]
    assert policy.allow_hosts == ("mirror.example",) and policy.allow_networks == ("10.0.0.0/8",)
    assert policy == FetchPolicy(allow_hosts=("mirror.example",), allow_networks=("10.0.0.0/8",))
    assert FetchPolicy().max_bytes == 4 * 1024**3 and FetchPolicy().deadline_s == 1800
