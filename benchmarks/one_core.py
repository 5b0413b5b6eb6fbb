"""Imported first by every benchmark script: one thread per numerical library, so numbers are
comparable across machines, and the repository on `sys.path`.

Thread pools are sized when the libraries load, so this must run before numpy or XLA are
imported; OpenCV and faiss are limited by the scripts that use them (`cv2.setNumThreads`,
`faiss.omp_set_num_threads`).
"""

import os
import sys

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
             "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS"):
    os.environ[_var] = "1"
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
