"""Operations people ask for (GPU VMs, node groups, day-2 actions), their audit and quotas:
services record them, the engine applies and follows them."""
