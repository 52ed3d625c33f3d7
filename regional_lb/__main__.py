"""`python -m regional_lb ...` is `regional-lb ...`."""

import sys

from regional_lb.cli import main

sys.exit(main())
