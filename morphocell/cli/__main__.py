"""``python -m morphocell.cli``: the same as the ``morphocell`` command."""
import sys

from . import main

sys.exit(main())
