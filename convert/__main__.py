"""`python -m minimind_hf.convert COMMAND ...`: the same parser as `minimind-hf convert COMMAND ...`."""

import sys

from minimind_hf.cli import main

sys.exit(main(["convert", *sys.argv[1:]]))
