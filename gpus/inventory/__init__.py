"""The fleet's snapshot (clusters, nodes, GPUs, workloads, skipped objects) and its sync."""
