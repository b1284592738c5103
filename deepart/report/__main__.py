import sys

from deepart.report.sweeps import main

sys.exit(main())
