import sys

from plexline.cli import main

sys.exit(main())
