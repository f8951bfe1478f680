"""`python -m trainer.demo`: see trainer/demo/run.py."""

import sys

from trainer.demo.run import main

sys.exit(main())
