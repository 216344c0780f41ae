"""Rewrite the README's benchmark table from bench JSON reports (``monai-cilmp bench --out report.json``).

    python scripts/readme_table.py report_c4.json report_c8.json [--readme README.md]

Every figure of the table comes from the reports; nothing is typed by hand.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from monai_cilmp.bench import update_readme


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("reports", nargs="+", help="bench JSON reports, one table row each")
    parser.add_argument("--readme", default=str(Path(__file__).resolve().parents[1] / "README.md"))
    args = parser.parse_args(argv)
    reports = [json.loads(Path(p).read_text()) for p in args.reports]
    readme = Path(args.readme)
    try:
        readme.write_text(update_readme(readme.read_text(), reports))
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
