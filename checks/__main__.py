"""``python -m checks``: see :mod:`checks.doors.cli`."""

import sys

from checks.doors.cli import main

if __name__ == "__main__":
    sys.exit(main())
