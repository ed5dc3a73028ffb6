"""`python -m minimind_hf.convert COMMAND ...` (same as `minimind-hf convert COMMAND ...`)."""

import sys

from .cli import main

sys.exit(main())
