"""Entry point of ``python -m agc_core``."""

import sys

from agc_core.cli import main

if __name__ == "__main__":
    sys.exit(main())
