import sys

from cache_conformance.selftest.run import main

sys.exit(main())
