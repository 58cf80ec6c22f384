"""On the test cluster's nodes: a process running in a Ray job's uploaded working directory
imports raypose from the upload only, never from this machine's (editable) install, so a module
the upload misses fails the cluster tests as it would on a real cluster's nodes.

Python runs this at start-up when this folder is on ``PYTHONPATH`` (``tests.clusters.node_env``).
"""

import os
import sys

if "working_dir_files" in os.getcwd():  # Ray's folder for a job's unpacked working_dir
    sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in str(getattr(f, "__module__", ""))]
    sys.path_hooks[:] = [h for h in sys.path_hooks if "__editable__" not in str(getattr(h, "__module__", ""))]
    sys.path[:] = [p for p in sys.path if "__editable__" not in p]
    sys.path_importer_cache.clear()
