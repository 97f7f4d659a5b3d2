"""`python -m qcore ...`: the command line (qcore/cli/ holds it: parser, commands, output, language)."""

import sys

from qcore.cli import main

if __name__ == "__main__":
    sys.exit(main())
