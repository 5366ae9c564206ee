"""The service's web page in a real headless Chromium (Debian's chromium and chromium-driver,
which .ci/run installs): upload an image, read the model's answer from the page, check the
drawing and a screenshot; a detector's boxes are listed and drawn; a bad file shows the
server's error."""

import os

import numpy as np
import pytest

from experiments import detection
from jaxvision import bundle
from tests.serving.helpers import digits, png

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (os.path.exists(CHROMIUM) and os.path.exists(DRIVER)):
        if os.environ.get("CI"):
            pytest.fail(f"CI needs {CHROMIUM} and {DRIVER}: .ci/run installs them")
        pytest.skip("apt-get install chromium chromium-driver to run the browser tests")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # Root in a container needs --no-sandbox; the rest keep Chromium off the (closed) network.
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-quic",
        "--no-first-run",
        "--window-size=1000,800",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium')}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


def _upload(browser, url, path):
    """Opens the page, waits for the model's description, chooses the file."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url)
    WebDriverWait(browser, 30).until(lambda d: "classes" in d.find_element(By.ID, "model").text)
    browser.find_element(By.ID, "file").send_keys(path)


@pytest.mark.slow
def test_the_page_shows_the_top_labels_of_an_uploaded_image(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, path = server
    image = digits(1, seed=7)[0]  # 8 x 8
    image_path = tmp_path / "digit.png"
    image_path.write_bytes(png(image))
    probs = bundle.load(path).predict([image])["probs"][0]
    names = bundle.load(path).class_names
    expected = [f"{names[i]} {100 * probs[i]:.1f}%" for i in np.argsort(-probs, kind="stable")[:5]]

    _upload(browser, url, str(image_path))
    # Fails (times out) if the page never shows an answer.
    items = WebDriverWait(browser, 30).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#answer li")
    )
    assert [item.text for item in items] == expected
    assert browser.find_element(By.ID, "error").text == ""
    timing = browser.find_element(By.ID, "timing").text
    assert timing.startswith("server ") and "ms, round trip" in timing, timing
    # The image is drawn enlarged 32x, nearest-neighbour: canvas pixel (x, y) is image pixel
    # (x // 32, y // 32).
    size, pixel = browser.execute_script(
        "const c = document.getElementById('canvas');"
        "const pixel = c.getContext('2d').getImageData(40, 70, 1, 1).data;"
        "return [[c.width, c.height], Array.from(pixel)];"
    )
    assert size == [256, 256]
    assert pixel == [int(image[70 // 32, 40 // 32, 0])] * 3 + [255]
    # "why?" lays the server's Grad-CAM over the image: the pixel takes its colours.
    browser.find_element(By.ID, "why").click()
    note = WebDriverWait(browser, 30).until(lambda d: d.find_element(By.ID, "why-note").text)
    assert note.startswith(f"Grad-CAM of {names[int(np.argmax(probs))]} ("), note
    after = browser.execute_script(
        "return Array.from(document.getElementById('canvas').getContext('2d')"
        ".getImageData(40, 70, 1, 1).data);"
    )
    assert after != pixel and after[3] == 255
    shot = tmp_path / "page.png"
    assert browser.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 5000


def test_the_page_shows_the_servers_error_for_a_file_that_is_not_an_image(
    server, browser, tmp_path
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, _ = server
    text_path = tmp_path / "notes.png"
    text_path.write_bytes(b"not an image at all")
    _upload(browser, url, str(text_path))
    error = WebDriverWait(browser, 30).until(lambda d: d.find_element(By.ID, "error").text)
    assert error.startswith("415: notes.png is not an image"), error
    assert browser.find_elements(By.CSS_SELECTOR, "#answer li") == []


@pytest.mark.slow
def test_the_page_draws_a_detectors_boxes(detector_server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, path, config = detector_server
    image = detection.open_dataset(config).test[0]["image"]  # 64 x 64, drawn 4x
    image_path = tmp_path / "shapes.png"
    image_path.write_bytes(png(image))
    predictor = bundle.load(path)
    found = predictor.predict([image])
    valid = found["valid"][0]
    boxes, scores = found["boxes"][0][valid], found["scores"][0][valid]
    names = [predictor.class_names[c] for c in found["classes"][0][valid]]
    expected = [
        f"{name} {score:.2f} at [{', '.join(f'{v:.0f}' for v in box)}]"
        for name, score, box in zip(names, scores, boxes, strict=True)
    ]

    _upload(browser, f"{url}/?model=shapes", str(image_path))  # several models served
    items = WebDriverWait(browser, 30).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#answer li")
    )
    assert [item.text for item in items] == expected
    # The last box drawn is on top: its left edge, halfway down, has its colour.
    x1, y1, _, y2 = np.round(boxes[-1] * 4).astype(int)
    pixel = browser.execute_script(
        "return Array.from(document.getElementById('canvas').getContext('2d')"
        f".getImageData({min(x1, 255)}, {(y1 + y2) // 2}, 1, 1).data);"
    )
    colours = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#008080", "#9a6324"]
    colour = colours[(len(boxes) - 1) % len(colours)]
    assert pixel == [int(colour[i : i + 2], 16) for i in (1, 3, 5)] + [255]
    assert browser.save_screenshot(str(tmp_path / "boxes.png"))
