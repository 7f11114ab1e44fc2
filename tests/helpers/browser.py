"""Headless Chromium for the web page's checks (tests/test_serve.py, benchmarks/bench_serve.py):
Debian's ``chromium`` and ``chromium-driver`` (scripts/install.sh installs them), driven by
Selenium; no browser is downloaded."""

from __future__ import annotations

import shutil


def chromium_paths() -> tuple[str, str] | None:
    """(browser, driver) executables, or None when they are not installed."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def headless_chromium(width: int = 1200, height: int = 800):
    """A Selenium WebDriver on headless Chromium (the caller quits it)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    paths = chromium_paths()
    if paths is None:
        raise FileNotFoundError("chromium and chromedriver are not installed (scripts/install.sh installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = paths[0]
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 f"--window-size={width},{height}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(paths[1]), options=options)


def ask_the_page(browser, url: str, prompt: str, timeout: float = 120.0) -> None:
    """Load the side-by-side page, send ``prompt``, wait until both answers have ended."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url + "/")
    browser.find_element(By.ID, "prompt").send_keys(prompt)
    browser.find_element(By.ID, "send").click()
    WebDriverWait(browser, timeout).until(lambda b: all(
        b.find_element(By.ID, panel).get_attribute("data-done") == "true" for panel in ("upstream", "mara")))
