# The provisioning forms' fixtures (a synced cluster with its served schemas, a node group).
from gpus.provisioning.tests.test_provisioning_quota_security import tenant_cluster  # noqa: F401
from gpus.provisioning.tests.test_provisioning_views import alice_group, cluster  # noqa: F401
