"""``python -m bstune.cli``: what ``--n-jobs`` workers run."""

import sys

from bstune.cli._main import main

sys.exit(main())
