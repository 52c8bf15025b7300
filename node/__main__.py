"""`python -m node run|bootstrap|init|status …`: see node/cli.py."""

import sys

from .cli import main

sys.exit(main())
