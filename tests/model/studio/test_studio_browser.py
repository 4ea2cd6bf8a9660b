"""The studio in a real browser (Debian's chromium driven by Playwright): upload, select bars with the
pointer, lock a note, infill, continue, variations, errors in the page, a screenshot.

They run when Playwright and a chromium are present (.ci/run installs both) and are skipped with the
reason otherwise. SMDIM_CHROMIUM overrides the browser path (default /usr/bin/chromium);
SMDIM_SCREENSHOT_DIR keeps the screenshot (default: the test's temporary folder)."""
import os
import shutil
from collections import Counter
from pathlib import Path

import pytest

from smdim.studio.server import Limits, create_app

from studio_helpers import running, tiny_run, two_track_midi

CHROMIUM = os.environ.get("SMDIM_CHROMIUM", "/usr/bin/chromium")

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None

if sync_playwright is None:
    MISSING = "browser tests skipped: playwright is not installed (pip install playwright==1.65.2)"
elif not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
    MISSING = f"browser tests skipped: no chromium at {CHROMIUM} (apt-get install -y chromium, or set SMDIM_CHROMIUM)"
else:
    MISSING = None
# CI sets SMDIM_REQUIRE_BROWSER=1: there a missing browser is a failure, not a skip
REQUIRED = os.environ.get("SMDIM_REQUIRE_BROWSER") == "1"
pytestmark = pytest.mark.skipif(MISSING is not None and not REQUIRED, reason=MISSING or "")


@pytest.fixture(autouse=True, scope="module")
def _browser_required():
    if MISSING is not None:
        pytest.fail(MISSING.replace("skipped", "required (SMDIM_REQUIRE_BROWSER=1)"))


@pytest.fixture(scope="module")
def base():
    with running(create_app({"tiny": tiny_run()}, limits=Limits(max_upload_bytes=256 * 1024))) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser, base, tmp_path):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(base + "/")
    page.wait_for_function("window.studio && window.studio.ready")
    yield page
    context.close()
    assert not errors, errors


@pytest.fixture(scope="module")
def song(tmp_path_factory):
    path = tmp_path_factory.mktemp("midi") / "two tracks.mid"
    path.write_bytes(two_track_midi())
    return path


def _open(page, song):
    page.set_input_files("#file", str(song))
    page.wait_for_function("window.studio.piece !== null")
    page.fill("#steps", "4")


def _select_bars(page, first, last):
    page.click("#roll", position={"x": page.evaluate(f"studio.barX({first})"), "y": 10})
    page.click("#roll", position={"x": page.evaluate(f"studio.barX({last})"), "y": 10}, modifiers=["Shift"])


def _wait_results(page, n=1):
    page.wait_for_function(f"window.studio.results.length === {n} && !window.studio.busy", timeout=120000)


def _key(n):
    return (n["time"], n["pitch"], n["duration"], n["track"])


def test_upload_select_lock_infill_keeps_the_rest(page, song):
    _open(page, song)
    assert page.evaluate("studio.piece.tracks.length") == 2
    _select_bars(page, 2, 3)
    assert page.evaluate("studio.selection") == [2, 3]
    assert "bars 3–4 selected" in page.inner_text("#selection")
    # lock two notes inside the selection by clicking them
    inside = page.evaluate("studio.piece.notes.filter(n => n.time >= studio.piece.bars[2].time && "
                           "n.time < studio.piece.bars[4].time).map(n => n.id)")
    for note in (inside[0], inside[5]):
        x, y = page.evaluate(f"studio.noteXY({note})")
        page.click("#roll", position={"x": x, "y": y})
    assert sorted(page.evaluate("[...studio.locked]")) == sorted([inside[0], inside[5]])
    original = page.evaluate("studio.piece")
    page.click("#infill-btn")
    _wait_results(page)
    result = page.evaluate("studio.results[0]")
    start, stop = original["bars"][2]["time"], original["bars"][4]["time"]
    keep = Counter(_key(n) for n in original["notes"]
                   if not start <= n["time"] < stop or n["id"] in (inside[0], inside[5]))
    assert not keep - Counter(_key(n) for n in result["notes"]), "a note outside the selection or a locked note changed"
    assert page.get_attribute("#audio-result", "src").endswith("/wav")
    assert page.get_attribute("#audio-original", "src").endswith("/wav")
    assert page.evaluate("fetch(document.querySelector('#audio-result').src)"
                         ".then(r => r.headers.get('content-type'))") == "audio/wav"
    assert page.inner_text("#status").startswith("done")
    assert page.get_attribute("#download-midi", "href").endswith("/midi")


def test_only_the_ticked_track_is_redrawn(page, song):
    _open(page, song)
    page.uncheck("#tracks input[data-track='1']")               # redraw the flute (track 0) only
    _select_bars(page, 1, 2)
    original = page.evaluate("studio.piece")
    page.click("#infill-btn")
    _wait_results(page)
    result = page.evaluate("studio.results[0]")
    piano = Counter(_key(n) for n in original["notes"] if n["track"] == 1)
    assert not piano - Counter(_key(n) for n in result["notes"])


def test_continue(page, song):
    _open(page, song)
    page.fill("#continue-bars", "2")
    page.click("#continue-btn")
    _wait_results(page)
    original, result = page.evaluate("studio.piece"), page.evaluate("studio.results[0]")
    assert not Counter(map(_key, original["notes"])) - Counter(map(_key, result["notes"]))
    assert len(result["bars"]) >= len(original["bars"])


def test_variations_side_by_side(page, song):
    _open(page, song)
    _select_bars(page, 4, 5)
    page.fill("#variations-k", "3")
    page.click("#variations-btn")
    _wait_results(page, 3)
    assert page.locator(".candidate").count() == 3
    assert page.locator(".candidate canvas").count() == 3
    page.locator(".candidate .choose").nth(2).click()
    assert page.evaluate("studio.chosen") == 2
    assert page.get_attribute("#audio-result", "src") == f"/api/pieces/{page.evaluate('studio.resultIds[2]')}/wav"


def test_errors_are_shown_in_the_page(page, song, tmp_path):
    page.click("#infill-btn")
    assert "open a piece first" in page.inner_text("#error")
    _open(page, song)
    page.click("#infill-btn")
    assert "nothing selected" in page.inner_text("#error")
    not_midi = tmp_path / "notes.mid"
    not_midi.write_text("this is not a MIDI file")
    page.set_input_files("#file", str(not_midi))
    page.wait_for_function("document.querySelector('#error').textContent.includes('not a MIDI file')")
    big = tmp_path / "big.mid"
    big.write_bytes(b"MThd" + bytes(300 * 1024))
    page.set_input_files("#file", str(big))
    page.wait_for_function("document.querySelector('#error').textContent.includes('too large')")
    assert page.is_visible("#error")


def test_screenshot(page, song, tmp_path):
    _open(page, song)
    _select_bars(page, 2, 4)
    x, y = page.evaluate("studio.noteXY(20)")
    page.click("#roll", position={"x": x, "y": y})
    page.fill("#variations-k", "2")
    page.click("#variations-btn")
    _wait_results(page, 2)
    out = Path(os.environ.get("SMDIM_SCREENSHOT_DIR", tmp_path)) / "studio.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(out), full_page=True)
    assert out.stat().st_size > 20_000


def test_corpus_list_follows_the_style_and_waits_while_it_is_prepared(browser):
    import threading

    from smdim.studio.corpus import CorpusPreparing
    from smdim.tokenizer import encode
    from symusic import Score

    run = tiny_run()
    ids = encode(run.tokenizer, Score.from_midi(two_track_midi()))
    ready = threading.Event()

    def pieces(style):
        if style == "second" and not ready.is_set():
            raise CorpusPreparing("preparing the held-out second pieces...")
        return [(f"{style} piece {i}", ids) for i in range(2 if style == "first" else 3)]

    with running(create_app({"first": run, "second": run}, corpus_pieces=pieces)) as url:
        context = browser.new_context()
        page = context.new_page()
        page.goto(url + "/")
        page.wait_for_function("window.studio && window.studio.ready")
        names = "[...document.querySelectorAll('#corpus-select option')].map(o => o.textContent)"
        assert page.evaluate(names) == ["first piece 0", "first piece 1"]
        page.select_option("#style", "second")
        page.wait_for_function("document.getElementById('corpus-note').textContent.includes('preparing')")
        assert page.evaluate(names) == [] and page.is_disabled("#corpus-load")
        ready.set()                                              # the page polls until the pieces are there
        page.wait_for_function(f"{names}.length === 3", timeout=20000)
        assert page.inner_text("#corpus-note") == "" and not page.is_disabled("#corpus-load")
        page.select_option("#corpus-select", "2")
        page.click("#corpus-load")
        page.wait_for_function("window.studio.piece !== null")
        assert "second piece 2" in page.inner_text("#piece-name")
        context.close()
