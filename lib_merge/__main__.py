import sys

from lib_merge.cli import main

sys.exit(main())
