"""`python -m beamjobs.worker JOB_ID`: run one job with the settings from the environment."""

from __future__ import annotations

import logging
import sys

from beamjobs import runtime
from beamjobs.settings import Settings
from beamjobs.worker.run import execute


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m beamjobs.worker JOB_ID", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    execute(argv[1], runtime.stores(Settings.from_env()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
