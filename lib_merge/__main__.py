import sys

from lib_merge.surfaces.cli import main

sys.exit(main())
