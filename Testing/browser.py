"""A report opened in headless Chromium (Debian's `chromium`) as a reader's browser shows it: which images loaded,
and which elements reach past the page's width, with every collapsible section opened."""

import json
import re
import shutil
import subprocess
from pathlib import Path

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

# Runs after every image has loaded (window `load`): opens each <details>, then measures.
_CHECK = """<script>
window.addEventListener('load', () => {
  document.querySelectorAll('details').forEach(d => d.open = true);
  const width = document.documentElement.clientWidth;
  const images = [...document.images].map(i => ({src: i.getAttribute('src'), loaded: i.complete && i.naturalWidth > 0,
                                                 shown_width: i.getBoundingClientRect().width}));
  // an element past the page's right edge, or whose content spills out of it (overflow visible)
  const spills = e => e.scrollWidth > e.clientWidth + 1 && getComputedStyle(e).overflowX === 'visible'
                      && e.clientWidth > 0;
  const overflowing = [...document.body.querySelectorAll('*')]
    .filter(e => e.getBoundingClientRect().right > width + 0.5 || spills(e))
    .map(e => e.tagName.toLowerCase() + ': ' + (e.textContent || '').trim().slice(0, 80));
  const out = {client_width: width, scroll_width: document.documentElement.scrollWidth, images, overflowing};
  const pre = document.createElement('pre');
  pre.id = 'browser-check';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def browser_check(report: Path, width: int = 1280) -> dict:
    """Open ``report`` (an HTML file) at ``width`` px; returns {client_width, scroll_width, images: [{src, loaded,
    shown_width}], overflowing: [elements whose right edge passes the page width]}."""
    probe = report.with_name("_browser_check.html")
    probe.write_text(report.read_text(encoding="utf-8").replace("</body>", _CHECK + "</body>"), encoding="utf-8")
    try:
        run = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                              f"--window-size={width},900", "--virtual-time-budget=20000", "--dump-dom",
                              probe.resolve().as_uri()], capture_output=True, text=True, timeout=180)
    finally:
        probe.unlink()
    found = re.search(r'<pre id="browser-check">(.*?)</pre>', run.stdout, re.S)
    assert found, f"no result from chromium (rc {run.returncode}): {run.stderr[-2000:]}"
    return json.loads(found.group(1).replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
                      .replace("&quot;", '"'))

