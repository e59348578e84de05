"""`python -m raftio.testing.nemesis`: the nemesis soak (see raftio.testing.nemesis.soak)."""

import sys

from raftio.testing.nemesis.soak import main

sys.exit(main())
