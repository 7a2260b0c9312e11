"""`python -m danlu ...` (also what torchrun/accelerate/deepspeed launch)."""

import sys

from danlu.cli import main

sys.exit(main())
