"""The page at `/` and the API docs at `/docs`, in a real browser: headless Chromium driven by Selenium against a
server on 127.0.0.1, every other host unreachable (the page and the docs must need nothing from outside).

Where Chromium, its driver or Selenium is missing these tests say so and skip (`.ci/run` installs the browser).
MTBERT_PAGE_MODEL=FOLDER serves that model instead of a tiny one, and MTBERT_PAGE_SCREENSHOT=FILE keeps the
page's screenshot (the README's was made so, from a model trained by `make train`)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import mtbert
from mtbert.serve.http import Limits, create_app

from .test_serve import serving

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
DRIVER = shutil.which("chromedriver")
try:
    import selenium  # noqa: F401

    SELENIUM = True
except ImportError:
    SELENIUM = False
MISSING = [
    name for name, found in (("chromium", CHROMIUM), ("chromedriver", DRIVER), ("selenium", SELENIUM)) if not found
]
pytestmark = [
    pytest.mark.slow,  # (a browser's start: `make test` runs them, the quick tier does not)
    pytest.mark.skipif(bool(MISSING), reason=f"no browser to test the page in: {', '.join(MISSING)} missing"),
]

LIMITS = Limits(max_texts=8, max_chars=200, max_body_bytes=4096, max_batch=64, batch_window_ms=5)


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_checkpoint: Path):
    from mtbert.fitting import fit

    from .conftest import toy_config, toy_data_in

    folder = os.environ.get("MTBERT_PAGE_MODEL")
    if not folder:
        tmp = tmp_path_factory.mktemp("page")
        cfg = toy_config(tmp, toy_data_in(tmp / "data"), tiny_checkpoint, epochs=2)
        fit(cfg)
        folder = str(Path(cfg.save_dir) / "finetune-2-0.003-adamw-none-multitask")
    predictor = mtbert.load(folder, precision="fp32")
    with serving(create_app(predictor, LIMITS, Path(folder).name)) as url:
        yield url, predictor


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=900,1300",
    ):
        options.add_argument(flag)
    # no host but this machine resolves: a page that fetched anything from a CDN would show it
    options.add_argument("--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1")
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def wait(driver, css: str, seconds: float = 20):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, seconds).until(ec.presence_of_element_located((By.CSS_SELECTOR, css)))


def ask(driver, task: str, *texts: str):
    """Types the texts into the task's section, presses its button, and returns the answer element once filled."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    section = wait(driver, f"#task-{task}")
    for box, text in zip(section.find_elements(By.TAG_NAME, "textarea"), texts, strict=True):
        box.clear()
        box.send_keys(text)
    answer = section.find_element(By.CLASS_NAME, "answer")
    driver.execute_script("arguments[0].textContent = ''", answer)
    section.find_element(By.TAG_NAME, "button").click()
    WebDriverWait(driver, 20).until(
        lambda _: answer.find_elements(By.CLASS_NAME, "label") or answer.find_elements(By.CLASS_NAME, "error")
    )
    return answer


def test_the_page_answers_a_sentence_a_pair_and_shows_the_servers_errors(server, browser, tmp_path) -> None:
    from selenium.webdriver.common.by import By

    url, predictor = server
    browser.get(url + "/")
    meta = wait(browser, "#meta code")
    assert meta.text and "sst, para, sts" in browser.find_element(By.ID, "meta").text
    answer = ask(browser, "sst", "A gorgeous, witty film.")
    expected = predictor.sentiment(["A gorgeous, witty film."])[0]
    assert answer.find_element(By.CLASS_NAME, "label").text == expected.name
    bars = answer.find_elements(By.CLASS_NAME, "bar")
    assert [b.get_attribute("data-name") for b in bars] == [f"p{k}" for k in range(5)]
    shown = [float(b.find_elements(By.TAG_NAME, "span")[-1].text) for b in bars]
    assert shown == pytest.approx(expected.probabilities, abs=6e-4)  # the bars are the model's probabilities
    answer = ask(browser, "sts", "A man plays a guitar.", "A man is playing music.")
    similarity = predictor.similarity([("A man plays a guitar.", "A man is playing music.")])[0]
    assert answer.find_element(By.CLASS_NAME, "label").text == f"{similarity:.2f} of 5"
    answer = ask(browser, "para", "How do I learn guitar?", "What is the best way to learn the guitar?")
    assert "probability" in answer.text
    screenshot = os.environ.get("MTBERT_PAGE_SCREENSHOT") or str(tmp_path / "page.png")
    browser.save_screenshot(screenshot)
    assert Path(screenshot).stat().st_size > 1000
    answer = ask(browser, "sst", "x" * 201)  # over --max_chars: the server's 422, in the page
    error = answer.find_element(By.CLASS_NAME, "error").text
    assert error.startswith("422") and "201 characters: at most 200 (max_chars)" in error


def test_the_api_docs_render_offline(server, browser) -> None:
    from selenium.webdriver.common.by import By

    url, _ = server
    browser.get(url + "/docs")
    wait(browser, ".opblock", seconds=30)  # Swagger UI ran: its script and style came from this server
    paths = {e.text for e in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
    assert {"/sentiment", "/paraphrase", "/similarity", "/health"} <= paths


def test_a_declared_task_has_its_section_with_its_label_names(browser, tmp_path, toy_data, tiny_checkpoint) -> None:
    from selenium.webdriver.common.by import By

    from mtbert.fitting import fit
    from mtbert.train.setup import run_name

    from .conftest import toy_config
    from .test_declared_tasks import NLI, task_file

    cfg = toy_config(tmp_path, toy_data, tiny_checkpoint, epochs=1).updated(
        tasks=str(task_file(toy_data, {"nli": NLI}))
    )
    fit(cfg)
    predictor = mtbert.load(Path(cfg.save_dir) / run_name(cfg), precision="fp32")
    with serving(create_app(predictor, LIMITS)) as url:
        browser.get(url + "/")
        answer = ask(browser, "nli", "A man plays guitar.", "A man plays music.")
        expected = predictor.predict("nli", [("A man plays guitar.", "A man plays music.")])[0]
        assert answer.find_element(By.CLASS_NAME, "label").text == expected.name
        names = [b.find_element(By.TAG_NAME, "span").text for b in answer.find_elements(By.CLASS_NAME, "bar")]
        assert names == NLI["labels"]
