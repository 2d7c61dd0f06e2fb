"""`python -m omnir1.cli ...`: the same as `omnir1 ...`."""

import sys

from omnir1.cli import main

sys.exit(main())
