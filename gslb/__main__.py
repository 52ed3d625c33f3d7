import sys

from gslb.cli import main

sys.exit(main())
