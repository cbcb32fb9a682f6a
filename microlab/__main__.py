import sys

from microlab.cli import main

sys.exit(main())
