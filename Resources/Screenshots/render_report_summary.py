r"""Screenshot the summary at the top of an evaluation report, as headless Chromium (Debian's `chromium`) draws it
at 1280 px: the README's ``report-summary.png``.

Usage (from the checkout)::

    .venv/bin/python Resources/Screenshots/render_report_summary.py demo_output/report/report.html \
        [--out Resources/Screenshots/report-summary.png] [--height 1500]

The committed PNG came from the report of ``make demo`` (147 synthetic cases, seed 0).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("report", type=Path, nargs="?", default=Path("demo_output/report/report.html"))
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "report-summary.png")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=1500)
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("chromium is not installed (Debian: apt-get install chromium)")
    if not args.report.is_file():
        raise SystemExit(f"{args.report}: no such report (run `make demo` first)")
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--window-size={args.width},{args.height}", f"--screenshot={args.out.resolve()}",
                    args.report.resolve().as_uri()], check=True, capture_output=True, timeout=180)
    print(f"{args.out} ({args.width} x {args.height} px) from {args.report}")


if __name__ == "__main__":
    main()
