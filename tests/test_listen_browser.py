"""The real page in a real headless Chromium (Debian's chromium + chromium-driver, driven by Selenium).

A listener opens the start page, completes the training page, plays the
reference and a condition, sets every slider of two trials and submits; the
database then holds exactly those ratings. A restarted server resumes the
session at the third trial. The rating page is saved as a screenshot
(in tmp_path; with ``STEMDAE_UPDATE_FIGURES=1`` also as the README's
``docs/figures/listen_page.png`` (not under reports/figures, which the evaluate stage owns and clears)).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from stemdae.listen.store import Store, default_url

from test_listen_build import build_test
from test_listen_server import free_port, start_server, stop_server

REPO = Path(__file__).resolve().parents[1]
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture()
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for exe in (CHROMEDRIVER, CHROMIUM):
        if not Path(exe).is_file():
            pytest.fail(f"{exe} missing: scripts/test.sh installs Debian's chromium and chromium-driver")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,900",
                "--autoplay-policy=no-user-gesture-required", "--mute-audio", "--disable-gpu"):
        opts.add_argument(arg)
    # An explicit driver path: Selenium Manager never runs, nothing is downloaded.
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def wait_for(driver, condition, what: str, timeout: float = 20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except Exception:  # element not there yet
            pass
        time.sleep(0.1)
    logs = driver.execute_script("return document.body.innerText")[:500]
    pytest.fail(f"timed out waiting for {what}; page says: {logs!r}")


def shown(driver, view: str) -> bool:
    return driver.find_element("id", f"view-{view}").is_displayed()


def rate_trial(driver, value_of) -> tuple[str, dict[str, int]]:
    """Play the reference and one condition, set every slider, submit; returns (trial id, key -> rating)."""
    wait_for(driver, lambda: shown(driver, "trial") and driver.execute_script(
        "return state.player && state.player.duration > 0"), "the trial's audio to load")
    trial_id = driver.find_element("tag name", "body").get_attribute("data-trial")
    driver.find_element("id", "play-ref").click()
    buttons = driver.find_elements("css selector", "button.cond-button")
    buttons[0].click()
    wait_for(driver, lambda: driver.execute_script("return state.player.playing && state.player.active") == "A",
             "condition A to play")
    sliders = driver.find_elements("css selector", "input.slider")
    ratings = {}
    for i, s in enumerate(sliders):
        key = s.get_attribute("data-key")
        ratings[key] = value_of(i)
        driver.execute_script("arguments[0].value = arguments[1];"
                              "arguments[0].dispatchEvent(new Event('input', {bubbles: true}));", s, ratings[key])
    submit = driver.find_element("id", "submit")
    assert submit.is_enabled()
    return trial_id, ratings


def test_browser_session_end_to_end(tmp_path, browser):
    _, test_dir = build_test(tmp_path)
    port = free_port()
    proc = start_server(test_dir, port)
    url = f"http://127.0.0.1:{port}/"
    try:
        browser.get(url)
        browser.find_element("id", "listener").send_keys("carol")
        browser.find_element("id", "start").click()
        wait_for(browser, lambda: shown(browser, "training") and browser.execute_script(
            "return state.player && state.player.duration > 0"), "the training page")
        done = browser.find_element("id", "training-done")
        assert not done.is_enabled()  # every stimulus must be heard first
        for b in browser.find_elements("css selector", "#view-training button[data-key]"):
            b.click()
        wait_for(browser, done.is_enabled, "the training page to be complete")
        done.click()

        first, r1 = rate_trial(browser, lambda i: 10 + 10 * i)
        shot = tmp_path / "listen_page.png"
        browser.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        if os.environ.get("STEMDAE_UPDATE_FIGURES"):  # refresh the README's copy on request only
            shutil.copyfile(shot, REPO / "docs" / "figures" / "listen_page.png")
        plays = browser.execute_script("return state.plays")
        browser.find_element("id", "submit").click()
        wait_for(browser, lambda: browser.find_element("tag name", "body").get_attribute("data-trial") != first,
                 "the second trial")
        second, r2 = rate_trial(browser, lambda i: 95 - 7 * i)
        browser.find_element("id", "submit").click()
        wait_for(browser, lambda: "Trial 3 of 4" in browser.find_element("id", "progress-text").text,
                 "progress 'Trial 3 of 4'")
    finally:
        stop_server(proc)

    import json

    manifest = json.loads((test_dir / "manifest.json").read_text())
    store = Store(default_url(test_dir), manifest["name"])
    df = store.ratings()
    store.close()
    assert set(df["trial_id"]) == {first, second} and set(df["listener_id"]) == {"carol"}
    assert len(df) == len(r1) + len(r2)
    # keys -> conditions as the server maps them for this listener: every rating stored as set
    from stemdae.listen.app import ListeningTest

    test = ListeningTest(test_dir)
    for trial_id, ratings in ((first, r1), (second, r2)):
        keys = test.keys("carol", trial_id)
        stored = df[df["trial_id"] == trial_id].set_index("condition")["rating"].to_dict()
        assert stored == {keys[k]: float(v) for k, v in ratings.items()}
    plays_first = df[df["trial_id"] == first].set_index("condition")["plays"].to_dict()
    keys = test.keys("carol", first)
    assert plays_first[keys["A"]] == plays["A"] >= 1 and plays["ref"] >= 1

    proc = start_server(test_dir, port)  # a restarted server: the session resumes at trial 3
    try:
        browser.get(url)
        assert browser.find_element("id", "listener").get_attribute("value") == "carol"  # remembered
        browser.find_element("id", "start").click()
        wait_for(browser, lambda: shown(browser, "trial"), "the resumed trial (training already done)")
        assert "Trial 3 of 4" in browser.find_element("id", "progress-text").text
        assert browser.find_element("tag name", "body").get_attribute("data-trial") not in (first, second)
    finally:
        stop_server(proc)
