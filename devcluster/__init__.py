"""devcluster: a fake Kubernetes API server behaving like a Cozystack management cluster.

Run it with ``python -m devcluster serve``; see devcluster/README.md.
No Django import anywhere in this package.
"""

__version__ = "0.1.0"
