"""Turn a run directory or a sweep directory into report.html and report.png:
`python report.py outputs/<date>/<time>` (see vae_lightning/report.py)."""

import sys

from vae_lightning.report import main

if __name__ == "__main__":
    sys.exit(main())
