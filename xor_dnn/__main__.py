"""``python -m xor_dnn`` is the ``xor-dnn`` command."""

import sys

from xor_dnn.cli import main

sys.exit(main())
