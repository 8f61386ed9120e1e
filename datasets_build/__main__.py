import sys

from datasets_build.cli.main import main

sys.exit(main())
