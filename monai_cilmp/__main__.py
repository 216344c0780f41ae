"""``python -m monai_cilmp`` is the ``monai-cilmp`` command."""

import sys

from monai_cilmp.cli import main

sys.exit(main())
