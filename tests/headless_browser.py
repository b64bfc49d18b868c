"""Headless Chromium for the tests that look at pages (Debian's chromium + chromedriver,
driven by selenium). Outside CI a machine without them skips those tests; in CI (env CI
set, as .ci/run does) a missing browser fails them (``probe_base.testing.skip_outside_ci``)."""

import contextlib
import shutil
import tempfile

from probe_base.testing import skip_outside_ci

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1000",
]


def browser_or_skip():
    """(chromium executable, chromedriver executable), or skip / fail saying what is missing."""
    browser = next(filter(None, map(shutil.which, ["chromium", "chromium-browser", "google-chrome"])), None)
    driver = shutil.which("chromedriver")
    try:
        import selenium  # noqa: F401

        have_selenium = True
    except ImportError:
        have_selenium = False
    if browser and driver and have_selenium:
        return browser, driver
    missing = [
        name
        for name, present in [("chromium", browser), ("chromedriver", driver), ("selenium", have_selenium)]
        if not present
    ]
    skip_outside_ci(
        f"headless Chromium is missing: {' and '.join(missing)} not installed (apt-get "
        "install chromium chromium-driver; pip install selenium)",
        ".ci/run installs them",
    )


@contextlib.contextmanager
def chromium(extra_flags=()):
    """A selenium driver of headless Chromium with a fresh profile; quits on exit."""
    browser, driver_path = browser_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    with tempfile.TemporaryDirectory(prefix="probe-chromium-") as profile:
        for flag in [*CHROMIUM_FLAGS, *extra_flags, f"--user-data-dir={profile}"]:
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(driver_path), options=options)
        try:
            yield driver
        finally:
            driver.quit()


def full_page_screenshot(driver, path) -> int:
    """Screenshot of the whole page (a viewport as tall as it); returns the page height."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride", {"width": 1280, "height": height, "deviceScaleFactor": 1, "mobile": False}
    )
    assert driver.save_screenshot(str(path)), f"no screenshot written to {path}"
    return height
