"""Load measurement of `pocketbert serve`: start the server on a free port, send it
``--requests`` POSTs from ``--clients`` concurrent clients (httpx, one connection each), print
the latency percentiles, stop the server::

    python -m pocketbert.apps.serving_load models/teacher --clients 200 --requests 2000

Each request classifies ``--texts`` sentences. Latency is from sending a request to reading
its whole answer, as the client sees it (queueing in the server included). An error is any
answer other than 200, or no answer within ``--client-timeout``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

SENTENCES = (
    "If the pump rattles, stop it and call maintenance.",
    "Visitors must sign in at the front desk before entering the lab.",
    "Please note that the lift is out of order until Friday.",
    "First remove the cover, then disconnect the battery.",
    "Unless the alarm sounds, keep working as usual.",
    "The fire doors must never be propped open.",
    "The canteen closes early on public holidays.",
    "Rinse the filter, let it dry, and put it back.",
)
START_TIMEOUT_S = 300.0  # loading torch and the model on a busy machine


def start_server(model_dir: str | Path, max_length: int | None = None,
                 log_file=None) -> tuple[subprocess.Popen, str]:
    """`pocketbert serve MODEL_DIR --port 0` in a subprocess; returns it and its URL.

    Its access log goes to ``log_file`` (a file object; default: discarded). Raises
    RuntimeError when the server does not print its URL within START_TIMEOUT_S."""
    cmd = [sys.executable, "-m", "pocketbert.apps.cli", "serve", str(model_dir), "--port", "0"]
    if max_length is not None:
        cmd += ["--max-length", str(max_length)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True,
                            stderr=log_file if log_file is not None else subprocess.DEVNULL)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True
                     ).start()
    try:
        first = lines.get(timeout=START_TIMEOUT_S)
    except queue.Empty:
        first = ""
    if " at http" not in first:
        proc.kill()
        proc.wait()
        raise RuntimeError(f"pocketbert serve {model_dir} did not start (exit status "
                           f"{proc.poll()}): {first.strip()!r}")
    return proc, first.split(" at ")[1].split(";")[0]


def run_clients(url: str, clients: int, requests: int, texts: int = 1,
                client_timeout_s: float = 120.0) -> dict[str, Any]:
    """Send ``requests`` POSTs of ``texts`` sentences each to ``url`` from ``clients``
    threads that start together; each thread takes the next request number until all are
    sent.

    Returns clients, requests, texts_per_request, errors (count), p50_ms, p99_ms, max_ms (of
    the answered requests; None when none was), wall_s and requests_per_s."""
    import httpx

    numbers = itertools.count()
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []
    barrier = threading.Barrier(clients + 1, timeout=START_TIMEOUT_S)

    def client() -> None:
        # TCP_NODELAY: httpx writes a request's head and body separately; with Nagle's
        # algorithm the body waits for the server's delayed ACK of the head (about 40 ms)
        transport = httpx.HTTPTransport(
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
        with httpx.Client(timeout=client_timeout_s, transport=transport) as http:
            barrier.wait()
            while True:
                with lock:
                    n = next(numbers)
                if n >= requests:
                    return
                body = {"texts": [SENTENCES[(n + i) % len(SENTENCES)] for i in range(texts)]}
                start = time.perf_counter()
                try:
                    answer = http.post(url, json=body)
                    answer.read()
                    ok = answer.status_code == 200
                    problem = f"HTTP {answer.status_code}"
                except httpx.HTTPError as exc:
                    ok, problem = False, type(exc).__name__
                elapsed = (time.perf_counter() - start) * 1000
                with lock:
                    if ok:
                        latencies.append(elapsed)
                    else:
                        errors.append(problem)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    ms = np.asarray(latencies)
    return {"clients": clients, "requests": requests, "texts_per_request": texts,
            "errors": len(errors), "error_kinds": sorted(set(errors)),
            "p50_ms": float(np.percentile(ms, 50)) if ms.size else None,
            "p99_ms": float(np.percentile(ms, 99)) if ms.size else None,
            "max_ms": float(ms.max()) if ms.size else None,
            "wall_s": wall, "requests_per_s": requests / wall}


def measure(model_dir: str | Path, clients: int = 200, requests: int = 2000, texts: int = 1,
            max_length: int | None = None) -> dict[str, Any]:
    """Start `pocketbert serve model_dir`, warm it up with one request per client, run
    run_clients, stop it with SIGINT. The result adds the server's exit status
    (server_exit) and whether its stderr held a traceback (server_traceback)."""
    with tempfile.TemporaryFile("w+") as log:
        proc, url = start_server(model_dir, max_length, log)
        try:
            run_clients(url, min(clients, 8), min(clients, 8), texts)  # warm-up, not counted
            result = run_clients(url, clients, requests, texts)
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                result_exit = proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                result_exit = proc.wait()
        log.seek(0)
        traceback = "Traceback" in log.read()
    return {**result, "server_exit": result_exit, "server_traceback": traceback}


def main(argv: list[str] | None = None) -> int:
    """Command line: print the measurement as ``name: value`` lines; exit status 1 when a
    request failed or the server did not stop cleanly."""
    parser = argparse.ArgumentParser(prog="python -m pocketbert.apps.serving_load",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", metavar="MODEL_DIR", help="the classifier folder to serve")
    parser.add_argument("--clients", type=int, default=200, help="concurrent clients (200)")
    parser.add_argument("--requests", type=int, default=2000, help="requests in all (2000)")
    parser.add_argument("--texts", type=int, default=1, help="texts per request (1)")
    parser.add_argument("--max-length", type=int, help="the server's --max-length")
    args = parser.parse_args(argv)
    if min(args.clients, args.requests, args.texts) < 1:
        parser.error("--clients, --requests and --texts must be 1 or more")
    from pocketbert.runtime import onnx_runner

    result = measure(args.model_dir, args.clients, args.requests, args.texts, args.max_length)
    avx512 = onnx_runner.cpu_features().get("cpu.avx512f")
    print(f"cpu: {onnx_runner.cpu_model() or 'unknown'}, {os.cpu_count()} logical CPUs, "
          f"avx512f: {'unknown' if avx512 is None else avx512}")
    for key, value in result.items():
        print(f"{key}: {f'{value:.1f}' if isinstance(value, float) else value}")
    failed = result["errors"] or result["server_exit"] != 0 or result["server_traceback"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
