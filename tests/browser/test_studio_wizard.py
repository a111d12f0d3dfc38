"""The studio in a real browser (Debian's Chromium driven by Playwright): walk the seven wizard
steps with the embedded tiny model and an uploaded JSONL, launch, and watch the job page draw
loss points and reach `succeeded`. Screenshots go to test-output/studio/ (or
$PEFTSTUDIO_TEST_OUTPUT/studio/)."""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
from pathlib import Path

import pytest

from peftstudio.studio.context import StudioSettings
from peftstudio.studio.server import create_app

pytestmark = [pytest.mark.browser, pytest.mark.slow]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SHOTS = Path(os.environ.get("PEFTSTUDIO_TEST_OUTPUT", Path(__file__).parents[2] / "test-output")) / "studio"


def _require_browser():
    if not CHROMIUM.exists():
        pytest.skip("browser tests need Debian's Chromium at /usr/bin/chromium: run `make test` as root "
                    "(it installs it) or `apt-get install chromium`")
    return pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def studio_url(model_cache, tmp_path):
    import uvicorn

    port = _free_port()
    app = create_app(StudioSettings(data_dir=tmp_path / "studio", port=port))
    app.state.studio.runner.poll_seconds = 0.2
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
    app.state.studio.runner.kill_all()


@pytest.fixture
def page(tmp_path):
    sync_api = _require_browser()
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1360, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(30_000)
        yield page
        context.close()


def _shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def _upload_file(tmp_path: Path) -> Path:
    rows = [{"instruction": f"Repeat the word {word}.", "output": word} for word in
            ("apple", "river", "stone", "cloud", "maple", "tiger", "ocean", "lemon", "piano", "amber") * 4]
    path = tmp_path / "my data.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_walk_the_wizard_launch_and_watch_the_job(studio_url, page, tmp_path):
    from playwright.sync_api import expect

    expect.set_options(timeout=30_000)  # a busy 2-core machine: the first preview loads the tokenizer
    page.goto(studio_url + "/")
    expect(page.locator("#step-1")).to_be_visible()
    page.click(".choice[data-option=tiny]")
    expect(page.locator(".choice.selected[data-option=tiny]")).to_be_visible()
    expect(page.locator("#check-status")).to_have_text("✓ valid")
    page.click("#next")

    expect(page.locator("#step-2")).to_be_visible()
    page.click(".choice[data-option=lora]")
    page.fill("input[name='peft.r']", "0")  # validated as you type, with the CLI's schema
    expect(page.locator(".field[data-key='peft.r'] .error")).to_contain_text("greater than or equal to 1")
    page.fill("input[name='peft.r']", "8")
    expect(page.locator(".field[data-key='peft.r'] .error")).to_have_text("")
    page.click("#next")

    expect(page.locator("#step-3")).to_be_visible()
    for key, value in {"training.num_batches": "6", "training.log_interval_steps": "1",
                       "training.save_interval_steps": "3", "training.micro_batch_size": "4"}.items():
        page.fill(f"input[name='{key}']", value)
    total = page.locator("#estimate-total")
    expect(page.locator("#estimate-memory")).to_contain_text("micro-batch 4")
    before = total.inner_text()
    page.fill("input[name='training.micro_batch_size']", "2")
    expect(page.locator("#estimate-memory")).to_contain_text("micro-batch 2")
    expect(total).not_to_have_text(before)
    assert "micro_batch_size=2" in page.url, "the state lives in the URL"
    page.click("#next")

    expect(page.locator("#step-4")).to_be_visible()
    expect(page.locator(".choice.selected[data-option=local]")).to_be_visible()
    page.click(".choice[data-option='runpod:H100']")  # a rented GPU: memory against 80 GiB, time and dollars
    expect(page.locator("#estimate-memory")).to_contain_text("of 80.0 GiB")
    expect(page.locator("#estimate-dollars")).to_contain_text("$")
    _shot(page, "4-compute")
    page.click(".choice[data-option=local]")
    expect(page.locator("#estimate-memory")).not_to_contain_text("of 80.0 GiB")
    page.click("#next")

    expect(page.locator("#step-5")).to_be_visible()
    page.set_input_files("#dataset-file", str(_upload_file(tmp_path)))
    expect(page.locator("#dataset-status")).to_contain_text("my data.jsonl")
    expect(page.locator("#preview-format")).to_have_text("instruction")
    expect(page.locator("#preview .sample .trained").first).to_be_visible()
    _shot(page, "5-dataset")
    page.click("#next")

    expect(page.locator("#step-6")).to_be_visible()
    page.click(".choice[data-option=jsonl]")
    page.click("#next")

    expect(page.locator("#step-7")).to_be_visible()
    expect(page.locator("#review-ok")).to_be_visible()
    expect(page.locator("#review-yaml")).to_contain_text("logging: jsonl")
    expect(page.locator("#review-command")).to_contain_text("training.micro_batch_size=2")
    expect(page.locator("#review-yaml")).to_contain_text("r: 8")
    _shot(page, "7-review")
    page.click("#back")
    expect(page.locator("#step-6")).to_be_visible()
    page.click("#next")
    page.click("#launch")

    page.wait_for_url(re.compile(r"/jobs/\d+$"))
    expect(page.locator("#job-status")).to_have_text(re.compile("queued|running|succeeded"))
    expect(page.locator("#chart-loss svg.point, #chart-loss circle.point").first).to_be_attached(timeout=90_000)
    expect(page.locator("#job-status")).to_have_text("succeeded", timeout=90_000)
    expect(page.locator("#chart-loss svg")).to_have_attribute("data-points", re.compile(r"^[1-9]\d*$"))
    expect(page.locator("#adapter-files")).to_contain_text("adapter_model.safetensors")
    expect(page.locator("#stat-step")).to_have_text("6 / 6")
    page.wait_for_timeout(300)
    _shot(page, "job-succeeded")
