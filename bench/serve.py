"""Throughput and latency of `hashae serve`, beside the same searches through the Python API.

A 100,000-item collection (synthetic 64-bit codes, a small trained model so that uploads can be
encoded) is served on a free loopback port; 8 client threads send requests for a fixed time to
``POST /api/search`` (a 64x64 PNG upload) and to ``GET /api/items/{id}/similar``; then the
same work runs in this process through the API (``Collection.search`` on the decoded image,
``Collection.similar`` on an item), ranked (the default two-stage ranking, with random
perceptual hashes stored) and in plain Hamming order. Reported: requests per second, p50 / p99 latency with 1
client (the server's overhead: its p50 against the in-process time) and with 8 (throughput;
latency then includes queueing, since requests are served one at a time), and the server's
resident memory. The clients run in this process and share the 2 cores with the server.

    python bench/serve.py
    python bench/serve.py --items 20000 --seconds 5
"""
from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
from hashae import Collection, HasherConfig, Perceptual, SemanticHasher  # noqa: E402


def build(folder: str, items: int) -> tuple[str, bytes]:
    """A store of ``items`` random codes with a small trained model, and one PNG to upload."""
    from PIL import Image
    rng = np.random.default_rng(0)
    images = (rng.random((64, 32, 32, 3)) * 255).astype(np.uint8)
    model = SemanticHasher(HasherConfig(bits=64, hidden=(256, 128), epochs=1, min_steps=20, pretrain="none")).fit(
        images, progress=False)
    codes = rng.integers(0, 256, (items, 8), dtype=np.uint8)
    hashes = Perceptual(*(rng.integers(0, 256, (items, 8), dtype=np.uint8) for _ in range(3)))
    paths = [f"photos/{i // 1000:04d}/img_{i:07d}.jpg" for i in range(items)]
    store = os.path.join(folder, "serve.h5")
    Collection.create(store, codes, paths, model=model, folder=folder, phash=hashes).close()
    buf = io.BytesIO()
    Image.fromarray(images[0]).resize((64, 64)).save(buf, "PNG")
    return store, buf.getvalue()


def multipart(data: bytes) -> tuple[bytes, dict]:
    b = uuid.uuid4().hex
    body = (f'--{b}\r\nContent-Disposition: form-data; name="image"; filename="q.png"\r\n\r\n').encode() + data + \
        f"\r\n--{b}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={b}"}


def load(port: int, make_request, clients: int, seconds: float) -> list:
    """Latencies (s) of requests sent by ``clients`` threads for ``seconds``, one keep-alive
    connection each."""
    latencies, lock, stop = [], threading.Lock(), time.monotonic() + seconds

    def client(n):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        rng = np.random.default_rng(n)
        mine = []
        while time.monotonic() < stop:
            method, path, body, headers = make_request(rng)
            t = time.perf_counter()
            conn.request(method, path, body=body, headers=headers)
            r = conn.getresponse()
            r.read()
            assert r.status == 200, r.status
            mine.append(time.perf_counter() - t)
        conn.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--k", type=int, default=10)
    args = ap.parse_args(argv)
    folder = tempfile.mkdtemp(prefix="hashae-serve-")
    store, png = build(folder, args.items)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-c", "import sys; from hashae.cli import main; sys.exit(main())",
                               "serve", "--store", store, "--port", str(port)], stderr=subprocess.DEVNULL)
    try:
        for _ in range(300):
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                c.request("GET", "/api/info")
                if c.getresponse().status == 200:
                    break
            except OSError:
                time.sleep(0.1)
        rss_idle = rss_mb(server.pid)
        body, headers = multipart(png)
        endpoints = {
            "POST /api/search": lambda rng: ("POST", f"/api/search?k={args.k}", body, headers),
            "GET /api/items/{id}/similar": lambda rng: ("GET", f"/api/items/{rng.integers(args.items)}/similar"
                                                               f"?k={args.k}", None, {}),
        }
        results = {}
        for name, make in endpoints.items():
            load(port, make, args.clients, 1.0)  # warm-up
            for clients in (1, args.clients):  # one client: the overhead; many: throughput
                lat = np.array(load(port, make, clients, args.seconds))
                results[f"{name} x{clients}"] = dict(rps=len(lat) / args.seconds, p50=np.percentile(lat, 50) * 1e3,
                                                     p99=np.percentile(lat, 99) * 1e3, n=len(lat))
        rss_loaded = rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait()

    # the same work in one process, through the Python API
    from hashae.ingest import decode_bytes
    with Collection.open(store) as coll:
        cfg = coll.model.config
        coll.search_codes(coll.codes[:1], args.k)  # builds the index
        rng = np.random.default_rng(0)

        def api_search(plain=False):
            picture = decode_bytes(png, cfg.image_size, thumb=True)
            return coll.search(coll.picture_queries([picture]), args.k, hamming_only=plain)

        def api_similar(plain=False):
            return coll.similar(int(rng.integers(args.items)), args.k, hamming_only=plain)
        inproc = {}
        for name, fn in (("POST /api/search", api_search), ("GET /api/items/{id}/similar", api_similar),
                         ("search, --hamming-only", lambda: api_search(True)),
                         ("similar, --hamming-only", lambda: api_similar(True))):
            times = []
            for _ in range(200):
                t = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t)
            inproc[name] = np.median(times) * 1e3

    print(f"{args.items:,} items, {args.clients} clients, {args.seconds:g} s per endpoint, k={args.k}, "
          f"{os.cpu_count()} cores")
    print(f"{'endpoint x clients':34s} {'req/s':>8s} {'p50 ms':>8s} {'p99 ms':>8s} {'API ms':>8s} {'p50/API':>8s}")
    for name, r in results.items():
        api = inproc[name.rsplit(" x", 1)[0]]
        print(f"{name:34s} {r['rps']:8.1f} {r['p50']:8.2f} {r['p99']:8.2f} {api:8.2f} {r['p50'] / api:8.1f}x")
    print(f"server memory: {rss_idle:.0f} MB after start, {rss_loaded:.0f} MB after the load")
    print(f"in process: search {inproc['POST /api/search']:.2f} ms ranked, {inproc['search, --hamming-only']:.2f} ms "
          f"in Hamming order; similar {inproc['GET /api/items/{id}/similar']:.2f} / "
          f"{inproc['similar, --hamming-only']:.2f} ms")
    out = os.path.join(HERE, "results", "serve.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump({"args": vars(args), "server": results, "in_process_ms": inproc,
                   "rss_mb": {"idle": rss_idle, "loaded": rss_loaded}}, f, indent=1)


if __name__ == "__main__":
    main()
