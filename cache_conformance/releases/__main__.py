import sys

from cache_conformance.releases.workflow import main

sys.exit(main())
