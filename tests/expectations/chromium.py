"""Headless Chromium for the tests that prove a page renders offline: a screenshot (or the DOM
after the page's scripts ran), and the network requests the page made, read from Chromium's
NetLog.

Chromium is a system package (`apt-get install -y chromium`; .ci/run installs it). Without it
a test is skipped locally, but fails in CI (CI or MOOVITAMIX_REQUIRE_CHROMIUM set).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# Offline-safe: no first-run UI, no sync, no component updates or other background requests.
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)  # fmt: skip
INSTALL = "apt-get install -y chromium"
TIMEOUT_S = 120


def chromium() -> str:
    """The Chromium executable; skips the test (fails it in CI) when there is none."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    message = f"headless Chromium is not installed: `{INSTALL}` (.ci/run installs it)"
    if os.environ.get("CI") or os.environ.get("MOOVITAMIX_REQUIRE_CHROMIUM"):
        pytest.fail(message)
    pytest.skip(message)


@dataclass(frozen=True)
class Rendering:
    output: Path  # the screenshot, or the DOM dump
    requests: list[str]  # URLs the page asked for over the network


def _run(page: Path, work: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    profile = work / "profile"
    profile.mkdir(parents=True)
    command = [
        chromium(), *FLAGS, f"--user-data-dir={profile}",
        f"--log-net-log={work / 'netlog.json'}", *args, page.resolve().as_uri(),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, timeout=TIMEOUT_S, check=False)
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]
    return result


def page_requests(net_log: Path) -> list[str]:
    """The URLs of the requests made on behalf of a file:// page (not Chromium's own)."""
    log = json.loads(net_log.read_text(encoding="utf-8"))
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    urls = []
    for event in log["events"]:
        params = event.get("params", {})
        if event["type"] == start and "file://" in str(params.get("network_isolation_key")):
            urls.append(params["url"])
    return urls


def screenshot(page: Path, work: Path, size: tuple[int, int]) -> Rendering:
    png = work / "screenshot.png"
    _run(page, work, f"--screenshot={png}", f"--window-size={size[0]},{size[1]}")
    assert png.is_file()
    return Rendering(png, page_requests(work / "netlog.json"))


def dump_dom(page: Path, work: Path) -> tuple[str, list[str]]:
    """The DOM after the page's scripts ran, and the page's network requests."""
    result = _run(page, work, "--dump-dom")
    return result.stdout.decode(), page_requests(work / "netlog.json")


def pixels(png: Path) -> np.ndarray:
    """The image as an RGB array (height, width, 3); fails on anything but a PNG."""
    with Image.open(png) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))
