"""A headless Chromium driven over the DevTools protocol, with the standard library only: open a page,
take a screenshot, and list what failed to load (network errors, HTTP errors, images that did not
decode, console errors, script exceptions). Used by the report's browser test.

The protocol runs over one WebSocket (RFC 6455; the client masks its frames, the server does not) to the
browser endpoint that Chromium writes to <user-data-dir>/DevToolsActivePort; pages are attached with
flat sessions (https://chromedevtools.github.io/devtools-protocol/)."""
from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def find_chromium() -> str | None:
    """$SIMKIT_CHROMIUM, else the first Chromium or Chrome on PATH."""
    if os.environ.get("SIMKIT_CHROMIUM"):
        return os.environ["SIMKIT_CHROMIUM"]
    return next((path for path in map(shutil.which, NAMES) if path), None)


@dataclass
class PageCheck:
    screenshot_png: bytes
    failed: list[str] = field(default_factory=list)     # what did not load, one sentence each
    images: list[dict] = field(default_factory=list)     # {src, complete, width} of every <img>
    requests: list[str] = field(default_factory=list)    # every URL the page asked for (data: URLs cut short)


class _WebSocket:
    def __init__(self, port: int, path: str, timeout_s: float):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self._recv()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(f"DevTools refused the WebSocket: {head[:200]!r}")

    def _recv(self) -> bytes:
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("DevTools closed the connection")
        return chunk

    def _read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            self.buffer += self._recv()
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def send(self, text: str, opcode: int = 0x1) -> None:
        data = text.encode()
        n = len(data)
        header = bytes([0x80 | opcode]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack(">H", n)
                                           if n < 1 << 16 else bytes([0x80 | 127]) + struct.pack(">Q", n))
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        self.sock.sendall(header + mask + masked)

    def recv(self) -> str:
        message = b""
        while True:
            first, second = self._read(2)
            n = second & 0x7F
            n = struct.unpack(">H", self._read(2))[0] if n == 126 else struct.unpack(">Q", self._read(8))[0] \
                if n == 127 else n
            mask = self._read(4) if second & 0x80 else b""
            payload = self._read(n)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            opcode = first & 0x0F
            if opcode == 0x8:
                raise ConnectionError("DevTools closed the WebSocket")
            if opcode == 0x9:
                self.send(payload.decode(errors="replace"), opcode=0xA)
                continue
            message += payload
            if first & 0x80 and opcode in (0x0, 0x1, 0x2):
                return message.decode()


class Chromium:
    """One headless browser; `check(url)` loads a page in a fresh tab. Use as a context manager."""

    def __init__(self, executable: str, profile_dir: Path, timeout_s: float = 60.0):
        self.timeout_s = timeout_s
        self.proc = subprocess.Popen(
            [executable, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
             "--no-default-browser-check", "--hide-scrollbars", "--remote-debugging-port=0",
             "--remote-allow-origins=*", f"--user-data-dir={profile_dir}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port, path = self._endpoint(profile_dir / "DevToolsActivePort")
        self.ws = _WebSocket(port, path, timeout_s)
        self.next_id, self.events = 0, []

    def _endpoint(self, active: Path) -> tuple[int, str]:
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited with code {self.proc.returncode} before it listened")
            lines = active.read_text().split("\n") if active.exists() else []
            if len(lines) >= 2 and lines[0].strip().isdigit() and lines[1].strip():
                return int(lines[0]), lines[1].strip()
            time.sleep(0.05)
        raise TimeoutError(f"chromium did not write {active} within {self.timeout_s:.0f} s")

    def call(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        self.ws.send(json.dumps(message))
        while True:
            reply = json.loads(self.ws.recv())
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, **params) -> dict:
        """The first event `method` (since the last reset of `events`) whose params include `params`."""
        deadline = time.monotonic() + self.timeout_s
        seen = 0
        while time.monotonic() < deadline:
            for event in self.events[seen:]:
                if event.get("method") == method and all(event.get("params", {}).get(k) == v
                                                          for k, v in params.items()):
                    return event
            seen = len(self.events)
            self.events.append(json.loads(self.ws.recv()))
        raise TimeoutError(f"no {method} {params} within {self.timeout_s:.0f} s")

    def check(self, url: str, width: int = 1200, height: int = 1600) -> PageCheck:
        """Load `url` in a new tab until its load event; screenshot the first `width` x `height` pixels."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Network", "Runtime", "Log"):
            self.call(f"{domain}.enable", session=session)
        self.call("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1,
                                                         "mobile": False}, session=session)
        self.call("Page.setLifecycleEventsEnabled", {"enabled": True}, session=session)
        self.events = []
        loader = self.call("Page.navigate", {"url": url}, session=session)["loaderId"]
        # the load event of this navigation (not a late one of the tab's about:blank): images are done
        self.wait_for("Page.lifecycleEvent", name="load", loaderId=loader)
        images = self.call("Runtime.evaluate", {"returnByValue": True, "expression": (
            "Array.from(document.images).map(i => ({src: i.currentSrc, complete: i.complete,"
            " width: i.naturalWidth}))")}, session=session)["result"]["value"]
        for image in images:
            image["src"] = _short(image["src"])
        shot = self.call("Page.captureScreenshot", {"format": "png"}, session=session)
        self.call("Target.closeTarget", {"targetId": target})
        page = PageCheck(base64.b64decode(shot["data"]), images=images)
        self._collect(page)
        return page

    def _collect(self, page: PageCheck) -> None:
        urls = {}
        for event in self.events:
            method, p = event.get("method"), event.get("params", {})
            if method == "Network.requestWillBeSent":
                urls[p["requestId"]] = _short(p["request"]["url"])
                page.requests.append(urls[p["requestId"]])
            elif method == "Network.loadingFailed":
                page.failed.append(f"{urls.get(p['requestId'], '?')}: {p.get('errorText')}")
            elif method == "Network.responseReceived" and p["response"].get("status", 200) >= 400:
                page.failed.append(f"{_short(p['response']['url'])}: HTTP {p['response']['status']}")
            elif method == "Log.entryAdded" and p["entry"]["level"] == "error":
                page.failed.append(f"console: {p['entry']['text']}")
            elif method == "Runtime.exceptionThrown":
                page.failed.append(f"script: {p['exceptionDetails'].get('text')}")
        page.failed += [f"image {i['src']} did not load" for i in page.images if not i["complete"] or not i["width"]]

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.call("Browser.close")
        except (OSError, RuntimeError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _short(url: str) -> str:
    """URLs as they are, except data: URLs (whole images) cut to their first 60 characters."""
    return url[:60] + "..." if url.startswith("data:") and len(url) > 60 else url


def blank(png: bytes) -> tuple[bool, float, float]:
    """(is blank, grey-level standard deviation, share of pixels unlike the most common colour)."""
    import io

    import numpy as np
    from matplotlib import image

    pixels = image.imread(io.BytesIO(png), format="png")[..., :3]
    grey = pixels.mean(axis=2)
    values, counts = np.unique((grey * 255).round().astype(int), return_counts=True)
    background = values[counts.argmax()]
    other = float(np.mean(np.abs(grey * 255 - background) > 8))
    spread = float(grey.std())
    return (spread < 0.02 or other < 0.01), spread, other
