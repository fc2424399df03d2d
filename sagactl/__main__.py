"""``python -m sagactl``: the same as the ``sagactl`` script."""

import sys

from sagactl.cli import main

sys.exit(main())
