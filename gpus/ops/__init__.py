"""The portal's own health and metrics: liveness and readiness for Kubernetes' probes, and a
Prometheus ``/metrics`` for the platform's VictoriaMetrics. It reads every app's rows (sync times,
operations, collection times), so it sits at the top of the layers, beside ``gpus.urls``."""
