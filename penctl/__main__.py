"""`python -m penctl` and the `penctl` console script."""

import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
