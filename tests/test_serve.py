"""`hashae serve` over HTTP: a real server process on a free loopback port, its JSON API against
the CLI's JSON, the security cases, a collection re-indexed while serving, and a real browser."""
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid

import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import SMALL, one_file_collection
from hashae import Collection, HasherConfig
from hashae.cli import main

pytest.importorskip("starlette", reason="the serve extra is not installed: pip install 'hashae[serve]'")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``hashae serve`` in its own process, stopped at the end of the test."""

    def __init__(self, store, *args):
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, "-c", "import sys; from hashae.cli import main; sys.exit(main())",
                                      "serve", "--store", str(store), "--port", str(self.port), *map(str, args)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.proc.stderr.read()[-2000:]}")
            try:
                status, _, _ = self.request("GET", "/api/info", headers={"Authorization": f"Bearer {args[-1]}"}
                                            if "--token" in map(str, args) else {})
                if status in (200, 401):
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("server did not start")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request(self, method, path, body=None, headers=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            return r.status, dict(r.getheaders()), r.read()
        finally:
            conn.close()

    def json(self, path, status=200):
        code, _, body = self.request("GET", path)
        assert code == status, (path, code, body[:300])
        return json.loads(body)

    def upload(self, data: bytes, name="q.png", k=None, headers=None):
        boundary = uuid.uuid4().hex
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\n"
                f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
        code, _, out = self.request("POST", "/api/search" + (f"?k={k}" if k else ""), body,
                                    {"Content-Type": f"multipart/form-data; boundary={boundary}", **(headers or {})})
        return code, json.loads(out)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture
def served(trained_store, tmp_path):
    store = tmp_path / "s.h5"
    shutil.copy(trained_store, store)
    server = Server(store)
    yield server, store
    server.stop()


def cli_json(*args):
    r = CliRunner().invoke(main, [*map(str, args), "--json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_api_answers_as_the_cli_does(served, sample_dir):
    server, store = served
    assert server.json("/api/info") == cli_json("info", "--store", store)
    q = sample_dir / "ring" / "ring_004.png"
    code, out = server.upload(q.read_bytes(), name="ring_004.png", k=5)
    assert code == 200 and out["query"] == "ring_004.png" and len(out["hits"]) == 5
    assert all(set(h) == {"path", "distance", "id", "score"} for h in out["hits"])
    assert out["hits"][0]["path"] == "ring/ring_004.png" and out["hits"][0]["distance"] == 0
    [cli] = cli_json("query", q, "--store", store, "-k", "5")
    assert [(h["path"], h["distance"]) for h in out["hits"]] == [(h["path"], h["distance"]) for h in cli["hits"]]
    item = out["hits"][0]["id"]
    similar = server.json(f"/api/items/{item}/similar?k=4")
    assert similar["query"] == "ring/ring_004.png" and similar["hits"][0]["id"] == item and len(similar["hits"]) == 4
    assert server.json("/api/clusters") == cli_json("cluster", "--store", store)
    assert server.json("/api/clusters?method=kmeans&k=6") == cli_json("cluster", "--store", store, "--method",
                                                                       "kmeans", "-k", "6", "--quiet")
    assert server.json("/api/clusters?method=graph") == cli_json("cluster", "--store", store, "--method", "graph",
                                                                 "--quiet")
    assert server.json("/api/duplicates") == cli_json("duplicates", "--store", store, "--quiet")
    for path in ("/", f"/items/{item}", "/clusters", "/duplicates", "/clusters?method=kmeans&page=1",
                 "/clusters?method=graph", "/map", "/outliers"):
        code, headers, body = server.request("GET", path)
        assert code == 200 and headers["content-type"].startswith("text/html"), (path, code)
    # the map places every item of this small collection once; the outliers page follows the CLI
    body = server.request("GET", "/map")[2].decode()
    n = server.json("/api/info")["items"]
    assert sorted(int(x) for x in re.findall(r'<a href="/items/(\d+)" title=', body)) == list(range(n))
    body = server.request("GET", "/outliers?n=5")[2].decode()
    listed = re.findall(r'<a class="tile" href="/items/\d+"><img loading="lazy" src="/thumbs/\d+" alt="([^"]*)"', body)
    assert listed == [o["path"] for o in cli_json("outliers", "--store", store, "-n", "5")]
    code, headers, body = server.request("GET", f"/thumbs/{item}")
    assert code == 200 and headers["content-type"] == "image/jpeg" and body[:2] == b"\xff\xd8"
    code, _, body = server.request("GET", f"/images/{item}")
    assert code == 200 and body == (sample_dir / "ring" / "ring_004.png").read_bytes()


def test_bad_requests_get_one_line_and_the_server_keeps_serving(served, tmp_path):
    server, _ = served
    for path in ("/api/items/999999/similar", "/api/items/-1/similar", "/thumbs/x", "/images/1e3"):
        code, _, body = server.request("GET", path)
        assert code == 404, (path, code)
    for path in ("/api/items/0/similar?k=0", "/api/items/0/similar?k=abc", "/api/clusters?method=dbscan"):
        code, _, body = server.request("GET", path)
        assert code == 400 and "\n" not in json.loads(body)["error"], (path, code, body)
    code, out = server.upload(b"this is not an image", name="notes.txt")
    assert code == 400 and "notes.txt" in out["error"] and "\n" not in out["error"]
    bomb = tmp_path / "bomb.png"
    Image.new("1", (12000, 12000)).save(bomb)  # 144 megapixels in a small file
    code, out = server.upload(bomb.read_bytes(), name="bomb.png")
    assert code == 400 and "pixels" in out["error"] or "bomb" in out["error"], out
    code, _, body = server.request("POST", "/api/search", b"x" * (33 << 20),
                                   {"Content-Type": "multipart/form-data; boundary=x"})
    assert code == 413
    code, _, _ = server.request("POST", "/api/search", b"--x\r\n\r\n", {"Content-Type": "text/plain"})
    assert code == 400
    assert server.json("/api/info")["items"] == 72  # still serving


def test_files_are_served_by_item_id_only(served, sample_dir, tmp_path):
    server, store = served
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:secret")
    for path in ("/images/..%2F..%2F..%2Fetc%2Fpasswd", "/images/../../etc/passwd", "/images//etc/passwd",
                 "/thumbs/%2e%2e%2fsecret.txt", f"/images/{secret}", "/images/0/../../secret.txt"):
        code, _, body = server.request("GET", path)
        assert code == 404 and b"root:x" not in body, (path, code)
    # an item whose file became a symbolic link out of the folder is not served
    folder = tmp_path / "linked"
    shutil.copytree(sample_dir, folder)
    with Collection.open(store) as c:
        model = c.model
    linked = tmp_path / "l.h5"
    Collection(linked).index(str(folder), model=model, workers=0, progress=False)
    with Collection.open(linked) as c:
        item = c.paths().index("circle/circle_000.png")
    os.remove(folder / "circle" / "circle_000.png")
    os.symlink(secret, folder / "circle" / "circle_000.png")
    other = Server(linked)
    try:
        for path in (f"/images/{item}", f"/thumbs/{item}"):
            code, _, body = other.request("GET", path)
            assert code == 404 and b"root:x" not in body, (path, code, body[:200])
    finally:
        other.stop()


def test_names_are_escaped_in_pages(trained_store, sample_dir, tmp_path):
    name = '"><script>alert("x")<!-- <img src=x onerror=alert(1)>.png'
    store, _ = one_file_collection(trained_store, sample_dir, tmp_path / "evil", name)
    server = Server(store)
    try:
        for path in ("/", "/items/0", "/clusters", "/duplicates", "/map", "/outliers"):
            code, _, body = server.request("GET", path)
            assert code == 200 and b"<script>alert" not in body and b"<img src=x" not in body, path
        assert "&quot;&gt;&lt;script&gt;alert(&quot;x&quot;)&lt;!--" in server.request("GET", "/items/0")[2].decode()
        assert server.json("/api/items/0/similar?k=1")["query"] == name
    finally:
        server.stop()


def test_a_token_guards_every_request(trained_store, tmp_path):
    r = CliRunner().invoke(main, ["serve", "--store", str(trained_store), "--host", "0.0.0.0"], env={"HASHAE_TOKEN": ""})
    assert r.exit_code == 1 and "--token" in r.output and r.output.count("\n") == 1, r.output
    server = Server(trained_store, "--token", "s3cret")
    try:
        assert server.request("GET", "/api/info")[0] == 401
        assert server.request("GET", "/")[0] == 401
        assert server.request("GET", "/thumbs/0")[0] == 401
        assert server.request("GET", "/api/info", headers={"Authorization": "Bearer wrong"})[0] == 401
        assert server.request("GET", "/api/info", headers={"Authorization": "Bearer s3cret"})[0] == 200
        code, headers, _ = server.request("GET", "/?token=s3cret")
        assert code == 200 and "hashae_token=s3cret" in headers["set-cookie"]
        assert server.request("GET", "/thumbs/0", headers={"Cookie": "hashae_token=s3cret"})[0] == 200
    finally:
        server.stop()


def test_a_new_commit_is_served_without_a_restart(trained_store, sample_copy, tmp_path):
    store = tmp_path / "s.h5"
    Collection(store).index(str(sample_copy), config=HasherConfig(bits=32, **dict(SMALL, epochs=2)), workers=0,
                            progress=False)
    server = Server(store)
    try:
        assert server.json("/api/info")["items"] == 72
        shutil.copytree(sample_copy / "ring", sample_copy / "more")
        Collection(store).index(str(sample_copy), workers=0, progress=False)
        assert server.json("/api/info")["items"] == 84
        code, out = server.upload((sample_copy / "more" / "ring_002.png").read_bytes(), k=200)
        assert code == 200 and "more/ring_002.png" in {h["path"] for h in out["hits"] if h["distance"] == 0}
    finally:
        server.stop()


def _browser():
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.skip("headless Chromium is not installed (Debian: apt-get install chromium chromium-driver; "
                    "`make test` does it)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,900"):
        options.add_argument(flag)
    return webdriver.Chrome(service=DriverService(shutil.which("chromedriver")), options=options)


def test_a_person_searches_and_walks_the_collection_in_a_browser(served, sample_dir, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait
    server, _ = served
    browser = _browser()
    try:
        browser.get(server.url + "/")
        assert "items" in browser.find_element(By.CSS_SELECTOR, "table.info").text
        browser.find_element(By.ID, "file").send_keys(str(sample_dir / "triangle" / "triangle_002.png"))
        WebDriverWait(browser, 60).until(ec.presence_of_element_located((By.CSS_SELECTOR, "#hits .hit")))
        hits = browser.find_elements(By.CSS_SELECTOR, "#hits .hit")
        assert len(hits) == 24 and hits[0].text.startswith("d=0 triangle/triangle_002.png")
        assert "nearest items to triangle_002.png" in browser.find_element(By.ID, "status").text
        browser.save_screenshot(str(tmp_path / "search.png"))
        hits[0].click()
        WebDriverWait(browser, 60).until(ec.presence_of_element_located((By.CSS_SELECTOR, "#nearest .tile")))
        assert browser.find_element(By.TAG_NAME, "h1").text == "triangle/triangle_002.png"
        assert browser.execute_script("return document.querySelector('img.big').naturalWidth") > 0
        browser.save_screenshot(str(tmp_path / "item.png"))
    finally:
        browser.quit()
    assert (tmp_path / "search.png").stat().st_size > 10_000 and (tmp_path / "item.png").stat().st_size > 10_000
