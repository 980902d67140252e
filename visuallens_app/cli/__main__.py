import sys

from visuallens_app.cli import main

sys.exit(main())
