"""``python -m bertrec.serve MODEL_DIR ...``: the same server as ``bertrec serve``."""

from __future__ import annotations

import sys

from bertrec.serve.cli import main

if __name__ == "__main__":
    sys.exit(main())
