#!/usr/bin/env python3
"""Render an r2r-synth report in headless Chromium at given widths: a full-page screenshot per width and
a check of the layout as a user sees it.

    scripts/screenshot_report.py REPORT.html OUT_PREFIX [--width 1400 --width 420] [--json]

writes OUT_PREFIX-<width>.png per width and prints, per width, the page's size and what is wrong with
its layout:

- overflow: the page is wider than the window (a horizontal scroll bar), and the elements that stick
  out past its right edge;
- spill: a cell, paragraph or block whose content is wider than its box (text running out of it);
- overlap: two boxes (headings, paragraphs, tables, images, records, list items) that intersect while
  neither holds the other.

Exit status: 0 when every width is clean, 1 when a check fails, 2 on bad arguments, 3 when Chromium is
missing (`apt-get install -y chromium`).

Chromium is driven over its DevTools protocol on a pipe (`--remote-debugging-pipe`, no port, no extra
package), because a headless window cannot be made narrower than 500 pixels with `--window-size`: the
viewport of each width is set with `Emulation.setDeviceMetricsOverride` instead. Nothing is fetched (the
report is self-contained; the flags turn off Chromium's background requests), and the page itself runs
no script: the checks are evaluated from outside, in the loaded page.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--remote-debugging-pipe"]

# Evaluated in the loaded page: the layout facts the checks need, as JSON.
LAYOUT_JS = r"""
(() => {
  const vw = document.documentElement.clientWidth;
  const name = el => el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') +
    (el.className && typeof el.className === 'string' ? '.' + el.className.split(' ').join('.') : '') +
    ' "' + (el.textContent || el.alt || '').trim().slice(0, 40) + '"';
  const all = [...document.body.querySelectorAll('*')];
  const overflow = all.filter(el => el.getBoundingClientRect().right > vw + 0.5)
    .filter(el => ![...el.children].some(c => c.getBoundingClientRect().right > vw + 0.5))
    .slice(0, 20).map(el => name(el) + ' right=' + Math.round(el.getBoundingClientRect().right));
  const spill = [...document.body.querySelectorAll('td,th,p,li,blockquote,pre,h1,h2,h3,div,section,code')]
    .filter(el => getComputedStyle(el).overflowX === 'visible' && el.clientWidth > 0 &&
                  el.scrollWidth > el.clientWidth + 1)
    .filter(el => ![...el.querySelectorAll('*')].some(c => getComputedStyle(c).overflowX === 'visible' &&
                  c.clientWidth > 0 && c.scrollWidth > c.clientWidth + 1))
    .slice(0, 20).map(el => name(el) + ' content ' + el.scrollWidth + ' > box ' + el.clientWidth);
  const boxes = [...document.body.querySelectorAll('h1,h2,h3,p,table,img,pre,blockquote,ul,ol,li,.rec,details')]
    .map(el => [el, el.getBoundingClientRect()]).filter(([el, r]) => r.width > 0 && r.height > 0);
  const overlap = [];
  for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
    const [a, ra] = boxes[i], [b, rb] = boxes[j];
    if (a.contains(b) || b.contains(a)) continue;
    const w = Math.min(ra.right, rb.right) - Math.max(ra.left, rb.left);
    const h = Math.min(ra.bottom, rb.bottom) - Math.max(ra.top, rb.top);
    if (w > 1 && h > 1 && overlap.length < 20) overlap.push(name(a) + ' x ' + name(b));
  }
  const imgs = [...document.images].map(im => ({w: Math.round(im.getBoundingClientRect().width),
                                                natural: im.naturalWidth, loaded: im.complete && im.naturalWidth > 0}));
  return JSON.stringify({viewport: vw, scroll_width: document.documentElement.scrollWidth,
                         height: document.documentElement.scrollHeight, overflow, spill, overlap, images: imgs,
                         boxes: boxes.length});
})()
"""


class Chromium:
    """One headless Chromium spoken to over its DevTools pipe (fd 3: our commands, fd 4: its replies)."""

    def __init__(self, exe: str):
        self.profile = tempfile.mkdtemp(prefix="r2r-chromium-")
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()

        # The shell hands the pipe ends to Chromium as its fds 3 and 4, by way of free numbers (an end
        # may already be 3 or 4), and closes the rest.
        r, w = to_child_r, from_child_w
        remap = f'exec "$0" "$@" 100<&{r} 101>&{w} {r}<&- {w}>&- 3<&100 4>&101 100<&- 101>&-'
        self.proc = subprocess.Popen(["bash", "-c", remap, exe, *FLAGS, f"--user-data-dir={self.profile}",
                                      "about:blank"], pass_fds=(to_child_r, from_child_w),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_child_r)
        os.close(from_child_w)
        self._buf = b""
        self._id = 0
        self.events: list[dict] = []

    def send(self, method: str, params: dict | None = None, *, session: str | None = None,
             timeout: float = 60.0) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_child, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method: str, *, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for i, ev in enumerate(self.events):
                if ev.get("method") == method:
                    return self.events.pop(i)
            self.events.append(self._read(deadline))

    def _read(self, deadline: float) -> dict:
        import select

        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_child], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._from_child, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium exited")
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._to_child, self._from_child):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self.profile, ignore_errors=True)


def render(exe: str, page: Path, widths: list[int], prefix: Path, *, height: int = 900) -> list[dict]:
    """Load `page` once per width and return the layout facts, writing `prefix-<width>.png` for each."""
    browser = Chromium(exe)
    results = []
    try:
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        browser.send("Page.enable", session=session)
        for width in widths:
            browser.send("Emulation.setDeviceMetricsOverride",
                         {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}, session=session)
            browser.send("Page.navigate", {"url": page.resolve().as_uri()}, session=session)
            browser.wait_event("Page.loadEventFired")
            facts = json.loads(browser.send("Runtime.evaluate", {"expression": LAYOUT_JS, "returnByValue": True},
                                            session=session)["result"]["value"])
            shot = browser.send("Page.captureScreenshot", {
                "format": "png", "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": width, "height": facts["height"], "scale": 1}}, session=session)
            out = Path(f"{prefix}-{width}.png")
            out.write_bytes(base64.b64decode(shot["data"]))
            facts.update(width=width, screenshot=str(out),
                         ok=not (facts["overflow"] or facts["spill"] or facts["overlap"])
                         and facts["scroll_width"] <= facts["viewport"]
                         and all(i["loaded"] for i in facts["images"]))
            results.append(facts)
    finally:
        browser.close()
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("report", type=Path)
    ap.add_argument("prefix", type=Path, help="screenshots go to PREFIX-<width>.png")
    ap.add_argument("--width", type=int, action="append", help="viewport width in CSS pixels (repeatable; "
                    "default 1400 and 420)")
    ap.add_argument("--json", action="store_true", help="print the layout facts as JSON")
    args = ap.parse_args(argv)
    if not args.report.is_file():
        print(f"{args.report}: no such file (run 'r2r-synth report RUN_DIR' first)", file=sys.stderr)
        return 2
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        print("chromium not found: install it with 'apt-get install -y chromium'", file=sys.stderr)
        return 3
    widths = args.width or [1400, 420]
    results = render(exe, args.report, widths, args.prefix)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(f"{'width':>6} {'page height':>11} {'scroll width':>12} {'overflow':>8} {'spill':>5} {'overlap':>7} "
              f"{'images':>6}  result")
        for r in results:
            print(f"{r['width']:>6} {r['height']:>11} {r['scroll_width']:>12} {len(r['overflow']):>8} "
                  f"{len(r['spill']):>5} {len(r['overlap']):>7} {len(r['images']):>6}  "
                  f"{'ok' if r['ok'] else 'FAIL'}  {r['screenshot']}")
            for what in ("overflow", "spill", "overlap"):
                for item in r[what]:
                    print(f"       {what}: {item}")
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
