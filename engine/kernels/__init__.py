"""Native CPU kernels, compiled at first use for this machine (build.py) and called through ctypes (ops.py)."""
