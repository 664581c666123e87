"""Run the benchmark suite: ``python benchmarks/run.py [options]``.

The same as ``python -m batchnorm bench``; see ``batchnorm/bench.py`` for what is
measured and ``benchmarks/RESULTS.md`` for the figures on the reference machine.
"""

import sys

from batchnorm.bench_cli import main

if __name__ == "__main__":
    sys.exit(main())
