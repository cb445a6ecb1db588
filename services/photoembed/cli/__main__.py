import sys

from photoembed.cli import main

sys.exit(main())
