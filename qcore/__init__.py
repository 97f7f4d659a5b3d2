"""Quantization Explorer's engine. Never imports streamlit.

torch's OpenMP threads spin only briefly (GOMP_SPINCOUNT) once a parallel region ends: long enough
to catch the next op of the same forward pass, short enough to free the core soon after, for the
calibration pass's histogram threads and for other runtimes timed in the same process. This must
be set before torch loads its OpenMP runtime; a value the user set wins.
"""

import os

os.environ.setdefault("GOMP_SPINCOUNT", "10000")
