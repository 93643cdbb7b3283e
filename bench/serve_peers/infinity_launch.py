"""Starts infinity-emb's command line inside its venv (run with that venv's python), with
the torch 2.13 shim of ``infinity_shim`` applied first. Imports nothing from bertrec or
bench.
"""

import sys

from infinity_shim import restore_opset14_helpers

restore_opset14_helpers()

from infinity_emb.cli import cli  # noqa: E402

if __name__ == "__main__":
    sys.argv[0] = "infinity_emb"
    sys.exit(cli())
