"""`python -m livetrain`: the same command line as the `livetrain` script."""

import sys

from livetrain.cli import main

sys.exit(main())
