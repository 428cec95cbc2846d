"""GPU telemetry: devices, samples, rollups and charts; metrics/ talks to the metric sources."""
