"""``python -m scheduler.cli``: the same as ``peach-scheduler``."""

import sys

from scheduler.cli.main import main

sys.exit(main())
