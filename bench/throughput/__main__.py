"""``python -m bench.throughput``: see ``bench.throughput.cli``."""

import sys

from bench.throughput.cli import main

sys.exit(main())
