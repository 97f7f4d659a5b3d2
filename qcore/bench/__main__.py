"""`python -m qcore.bench ...` (the same as `python -m qcore bench ...`)."""

import sys

from qcore.bench import main

sys.exit(main())
