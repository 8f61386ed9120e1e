import sys

from datasets_build.cli import main

sys.exit(main())
