import sys

from captum_paths.cli import main

sys.exit(main())
