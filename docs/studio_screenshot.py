"""Makes docs/studio.png, the README's picture of `smdim serve`: the bundled models, style bach, a
held-out chorale, bars 3-4 selected, one note locked, three variations at 8 steps.

    python docs/studio_screenshot.py      (needs playwright and Debian's chromium, see tests/model/studio)
"""
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[1]
PORT = 8799


def main():
    server = subprocess.Popen([sys.executable, "-m", "smdim.cli", "--threads", "2", "serve", "--port", str(PORT)])
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{PORT}/api/info", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"http://127.0.0.1:{PORT}/")
            page.wait_for_function("window.studio.ready")
            page.select_option("#style", "bach")
            page.wait_for_function("document.querySelectorAll('#corpus-select option').length > 0", timeout=900000)
            page.click("#corpus-load")
            page.wait_for_function("window.studio.piece !== null")
            page.click("#roll", position={"x": page.evaluate("studio.barX(2)"), "y": 10})
            page.click("#roll", position={"x": page.evaluate("studio.barX(3)"), "y": 10}, modifiers=["Shift"])
            x, y = page.evaluate("studio.noteXY(studio.piece.notes.find(n => n.time >= studio.piece.bars[2].time).id)")
            page.click("#roll", position={"x": x, "y": y})
            page.fill("#steps", "8")
            page.click("#variations-btn")
            page.wait_for_function("window.studio.results.length === 3 && !window.studio.busy", timeout=300000)
            page.screenshot(path=str(ROOT / "docs/studio.png"), full_page=True)
            browser.close()
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
