"""Headless Chromium for checking the web player: open a page, run JavaScript, take a screenshot.

Talks the DevTools protocol over ``--remote-debugging-pipe`` (file descriptors 3 and 4, messages
of JSON ended by a NUL byte), so it needs nothing but a Chromium binary: no node, no websocket
client, no open port. It uses five protocol methods; anything more belongs in a real client
(Playwright). WebGL2 without a GPU runs on SwiftShader (:data:`FLAGS`).
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["FLAGS", "find_chromium", "Chromium", "ChromiumError"]

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--mute-audio",
)
"""Flags for a closed network and no GPU (WebGL2 through ANGLE on SwiftShader); a fresh
``--user-data-dir`` is added per browser."""


class ChromiumError(RuntimeError):
    """Chromium did not start, closed, timed out, or a page's script failed."""


def find_chromium() -> str | None:
    """The Chromium executable: ``$GEN4D_CHROMIUM``, else ``chromium`` / ``chromium-browser`` /
    ``google-chrome`` on the PATH, else None."""
    env = os.environ.get("GEN4D_CHROMIUM")
    if env:
        return env if Path(env).is_file() else None
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


class Chromium:
    """One headless browser with one page; use as a context manager. ``flags``: the command line
    (without the profile folder and window size), :data:`FLAGS` by default."""

    def __init__(
        self,
        executable: str | None = None,
        width: int = 800,
        height: int = 600,
        timeout: float = 60.0,
        flags: Sequence[str] = FLAGS,
    ):
        executable = executable or find_chromium()
        if executable is None:
            raise ChromiumError("no Chromium found (install Debian's `chromium`, or set GEN4D_CHROMIUM)")
        self.timeout = timeout
        self._profile = tempfile.TemporaryDirectory(prefix="gen4d-chromium-")
        to_browser_read, self._to_browser = os.pipe()
        self._from_browser, from_browser_write = os.pipe()

        def pipes_on_3_and_4() -> None:  # runs in the child before exec
            read, write = os.dup(to_browser_read), os.dup(from_browser_write)
            os.dup2(read, 3)
            os.dup2(write, 4)

        args = [executable, *flags, f"--user-data-dir={self._profile.name}", f"--window-size={width},{height}"]
        self._process = subprocess.Popen(
            [*args, "--remote-debugging-pipe", "about:blank"],
            preexec_fn=pipes_on_3_and_4,
            pass_fds=(3, 4),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_browser_read)
        os.close(from_browser_write)
        self._buffer = b""
        self._next_id = 0
        self.session: str | None = None
        try:
            target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
            self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            self.call("Page.enable")
            self.call("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})  # fmt: skip
            self.version = self.call("Browser.getVersion", session=False)["product"]
        except BaseException:
            self.close()
            raise

    # -- protocol ---------------------------------------------------------------------------
    def call(self, method: str, params: dict[str, Any] | None = None, session: bool = True) -> dict[str, Any]:
        """Send one protocol command (to the page's session unless ``session`` is False) and
        return its result."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session and self.session is not None:
            message["sessionId"] = self.session
        try:
            os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        except OSError as err:
            raise ChromiumError(f"Chromium closed its pipe ({err.strerror})") from None
        deadline = time.monotonic() + self.timeout
        while True:
            reply = json.loads(self._read_message(deadline))
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise ChromiumError(f"{method}: {reply['error'].get('message')}")
                return reply.get("result", {})

    def _read_message(self, deadline: float) -> bytes:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_browser], [], [], left)[0]:
                raise ChromiumError(f"no answer from Chromium within {self.timeout:.0f} s")
            chunk = os.read(self._from_browser, 1 << 16)
            if not chunk:
                raise ChromiumError("Chromium closed its pipe (it crashed or could not start)")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return message

    # -- page -------------------------------------------------------------------------------
    def open(self, url: str, ready: str = "document.readyState === 'complete'") -> None:
        """Navigate to ``url`` and wait until the JavaScript expression ``ready`` is true in the new
        document (the old one is marked first, so its state is never taken for the new page's)."""
        self.evaluate("window.__gen4dPreviousPage = true")
        self.call("Page.navigate", {"url": url})
        self.wait_for(f"!window.__gen4dPreviousPage && ({ready})")

    def wait_for(self, expression: str, timeout: float | None = None) -> Any:
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise ChromiumError(f"timed out waiting for {expression!r}")
            time.sleep(0.05)

    def evaluate(self, expression: str, await_promise: bool = False) -> Any:
        """The JSON value of a JavaScript expression in the page (a thrown error -> ChromiumError)."""
        result = self.call(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": await_promise}
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise ChromiumError(f"script failed: {text}")
        return result["result"].get("value")

    def screenshot(self) -> bytes:
        """PNG of the page's viewport."""
        return base64.b64decode(self.call("Page.captureScreenshot", {"format": "png"})["data"])

    def close(self) -> None:
        if self._process.poll() is None:
            try:
                os.write(self._to_browser, json.dumps({"id": 0, "method": "Browser.close"}).encode() + b"\0")
                self._process.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self._process.kill()
                self._process.wait()
        for fd in (self._to_browser, self._from_browser):
            try:
                os.close(fd)
            except OSError:
                pass
        self._profile.cleanup()

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
