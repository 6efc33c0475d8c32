"""`python -m beamjobs.cli`: the `beamjobs` command."""

import sys

from beamjobs.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
