"""python -m cache_conformance.report --results reports/results --output reports/site"""

import sys

from cache_conformance.report import main

sys.exit(main())
