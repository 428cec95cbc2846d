from django.urls import path

from gpus.provisioning import views

urlpatterns = [
    path("tenants/<slug:namespace>/gpus/", views.my_gpus, name="my_gpus"),
    path("tenants/<slug:namespace>/vms/new/", views.vm_new, name="vm_new"),
    path("tenants/<slug:namespace>/vms/new/check/", views.vm_check, name="vm_check"),
    path(
        "tenants/<slug:namespace>/vms/<slug:name>/<slug:action>/",
        views.vm_action,
        name="vm_action",
    ),
    path(
        "tenants/<slug:namespace>/kubernetes/nodegroups/new/",
        views.node_group_edit,
        name="node_group_new",
    ),
    path(
        "tenants/<slug:namespace>/kubernetes/nodegroups/new/check/",
        views.node_group_check,
        name="node_group_new_check",
    ),
    path(
        "tenants/<slug:namespace>/kubernetes/<slug:name>/nodegroups/<slug:group>/",
        views.node_group_edit,
        name="node_group_edit",
    ),
    path(
        "tenants/<slug:namespace>/kubernetes/<slug:name>/nodegroups/<slug:group>/check/",
        views.node_group_check,
        name="node_group_edit_check",
    ),
    path(
        "tenants/<slug:namespace>/kubernetes/<slug:name>/nodegroups/<slug:group>/delete/",
        views.node_group_delete,
        name="node_group_delete",
    ),
    path(
        "tenants/<slug:namespace>/kubernetes/<slug:name>/delete/",
        views.cluster_delete,
        name="cluster_delete",
    ),
    path("tenants/<slug:namespace>/operations/", views.operation_list, name="operations"),
    path("audit/", views.audit_log, name="audit"),
    path("tenants/<slug:namespace>/operations/<int:pk>/", views.operation_detail, name="operation"),
    path(
        "tenants/<slug:namespace>/operations/<int:pk>/status/",
        views.operation_status,
        name="operation_status",
    ),
    path(
        "tenants/<slug:namespace>/operations/<int:pk>/retry/",
        views.operation_retry,
        name="operation_retry",
    ),
    path(
        "tenants/<slug:namespace>/operations/<int:pk>/cancel/",
        views.operation_cancel,
        name="operation_cancel",
    ),
    path("tenants/<slug:namespace>/gpus/<dbid:pk>/", views.workload_detail, name="workload"),
    path(
        "tenants/<slug:namespace>/gpus/<dbid:pk>/connect/",
        views.workload_connect,
        name="workload_connect",
    ),
    path(
        "tenants/<slug:namespace>/gpus/<dbid:pk>/kubeconfig/",
        views.workload_kubeconfig,
        name="workload_kubeconfig",
    ),
]
