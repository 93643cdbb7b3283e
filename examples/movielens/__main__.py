"""``python -m examples.movielens [--data DIR]``: the demo, as ``bertrec demo`` runs it."""

import sys

from bertrec.cli import main

sys.exit(main(["demo", *sys.argv[1:]]))
