"""``python -m pounce`` runs the ``pounce`` command."""

import sys

from pounce.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
