"""The only code that talks to metric sources: Prometheus-compatible query APIs, DCGM exporters
scraped directly, and guest agents pushing samples. Everything here returns `Reading`s; storing
and rolling them up is `collector.py` and `rollup.py`."""
