"""Debian's headless Chromium, driven by Selenium through Debian's chromedriver, with a
fake microphone that plays a WAV file made at test time.

Nothing is downloaded: the browser and the driver are the `chromium` and
`chromium-driver` packages, and giving Selenium the driver's path keeps Selenium
Manager (which would fetch a browser) out of the way.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from adapters.speech.audio import wav_bytes
from tests.support.webrtc_client import RATE, ServerProcess, speech48k

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
INSTALL_HINT = ("install them with `apt-get install -y chromium chromium-driver` "
                "(scripts/test does this) and `pip install -e '.[test]'` for selenium")


def missing_tools() -> list[str]:
    """What this machine lacks to run the browser tests; empty when all is there."""
    missing = [f"{path} (Debian package {package})"
               for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver"))
               if not (path.is_file() and os.access(path, os.X_OK))]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the Python package selenium (in the test extras)")
    return missing


def fake_microphone_wav(path: Path, text: str = "hello", lead_s: float = 3.0,
                        tail_s: float = 8.0, gain: float = 0.5) -> Path:
    """A WAV for --use-file-for-fake-audio-capture: low room noise for `lead_s`, the
    project's TTS saying `text` at `gain`, then `tail_s` of low noise so the looping file
    does not start a second turn while the first one is answered.

    Chromium starts reading the file at getUserMedia, about 0.4 s before the call is up,
    and the lead keeps the word clear of the set-up even on a loaded machine. The gain:
    at full TTS level Chromium's automatic gain control drives the word into clipping,
    and the grammar decoder (dithered, so not deterministic) then heard "oh" or "the oh"
    in 14 of 140 replays of the audio the server got (2 of 14 live calls on a loaded
    2-core machine); at half level, 0 of 140 replays and 0 of 14 calls."""
    rng = np.random.default_rng(11)

    def noise(seconds: float) -> np.ndarray[Any, Any]:
        return rng.normal(0, 20, int(RATE * seconds)).astype(np.int16)

    speech = np.rint(speech48k(text).astype(np.float64) * gain).astype(np.int16)
    pcm = np.concatenate([noise(lead_s), speech, noise(tail_s)]).astype(np.int16)
    path.write_bytes(wav_bytes(pcm, RATE))
    return path


def chromium_arguments(wav: Path, profile: Path) -> list[str]:
    return [
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}",
        "--allow-loopback-in-peer-connection",  # the server offers only 127.0.0.1
        "--autoplay-policy=no-user-gesture-required",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", "--no-default-browser-check", "--disable-quic",
        "--mute-audio", "--window-size=1280,1100", f"--user-data-dir={profile}",
    ]


@contextmanager
def chromium(wav: Path, workdir: Path) -> Iterator[Any]:
    """A Selenium WebDriver for headless Chromium whose microphone plays `wav`.
    chromedriver's own log goes to workdir/chromedriver.log."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = workdir / "chromium-profile"
    profile.mkdir(parents=True, exist_ok=True)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in chromium_arguments(wav, profile):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(str(CHROMEDRIVER), log_output=str(workdir / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    try:
        driver.set_page_load_timeout(20)
        yield driver
    finally:
        driver.quit()


def text_of(driver: Any, element_id: str) -> str:
    """An element's text as the page shows it (empty when the element is missing)."""
    value = driver.execute_script(
        "const e = document.getElementById(arguments[0]); return e ? e.textContent : '';",
        element_id)
    return str(value or "").strip()


def console_lines(driver: Any) -> list[str]:
    try:
        return [f"{e.get('level')} {e.get('message')}" for e in driver.get_log("browser")]
    except Exception:  # not every driver build keeps the browser log
        return []


def save_screenshot(driver: Any, path: Path) -> list[Path]:
    """Writes a PNG to `path` and a copy into $TURNCHART_ARTIFACTS when that is set."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not driver.save_screenshot(str(path)):
        raise RuntimeError(f"Chromium could not write a screenshot to {path}")
    saved = [path]
    artifacts = os.environ.get("TURNCHART_ARTIFACTS")
    if artifacts:
        target = Path(artifacts)
        target.mkdir(parents=True, exist_ok=True)
        saved.append(Path(shutil.copyfile(path, target / path.name)))
    return saved


@contextmanager
def browser_test_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A real `turnchart serve` for a browser test; missing Chromium tools fail the
    test (a skip would let the suite pass without it)."""
    missing = missing_tools()
    if missing:
        pytest.fail("the browser test needs " + ", ".join(missing) + "; " + INSTALL_HINT)
    process = ServerProcess(tmp_path)
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()
