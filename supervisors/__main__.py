"""``python -m supervisors``: the same command line as the ``toolvisor`` script."""

import sys

from supervisors.frontends.cli import main

if __name__ == "__main__":
    sys.exit(main())
