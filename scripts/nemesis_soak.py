"""Nemesis soak: `python -m raftio.testing.nemesis`, kept under its old name.

python scripts/nemesis_soak.py --seeds 200 --jobs 4            # seeds 1..200
python scripts/nemesis_soak.py --seed 17 --nodes 5 -v          # replay one
"""

from __future__ import annotations

import sys

from raftio.testing.nemesis.soak import main

if __name__ == "__main__":
    sys.exit(main())
