import sys

from raypose.cli.main import main

sys.exit(main())
