"""The GPU VM and node-group forms: they parse and convert input, never act."""

from __future__ import annotations

import base64
import binascii
from typing import Any

import yaml
from django import forms
from django.core.validators import RegexValidator
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from gpus.catalog.sizing import (
    FAMILY_PACKAGER,
    FAMILY_PROFILES,
    MIN_VCPU_PER_GPU,
    SERIES_LABELS,
    driver_cloud_init,
    image_label,
    instance_series,
    os_family,
    recommended_instance_type,
)
from gpus.inventory.selectors import Catalogue
from gpus.kube.apps import DNS1035, NodeGroupRequest, VmRequest
from gpus.kube.apps import max_vm_name_length as max_name_length
from gpus.provisioning.choices import ExternalAccess, RunStrategy

# VM, cluster and node-group names: the cluster's own pattern, said in plain words.
dns1035_name = RegexValidator(
    DNS1035,
    _("Use lowercase letters, digits and “-”; start with a letter, end with a letter or digit."),
    code="dns1035",
)


# Every text a form takes is bounded, so a check costs the same whatever is posted (a live check
# of "1..65535" open ports once froze every web worker), and so is the object sent to the cluster.
MAX_PORTS = 32
MAX_PORTS_TEXT = 400  # 32 ports written out, with room for spaces
MAX_SSH_KEYS = 32
MAX_SSH_KEYS_TEXT = 32 * 1024  # a 16,384-bit RSA key is about 2,800 characters
MAX_CLOUD_INIT = 32 * 1024  # several times the driver and agent snippets together
MAX_CHOICE = 253  # the longest value any choice has (a Kubernetes name)
# Real cloud-config nests a few levels (write_files > item > content); PyYAML's composer recurses
# per level, so the depth is checked on the parser's events first (linear, no recursion).
MAX_CLOUD_INIT_DEPTH = 32


class BoundedChoiceField(forms.ChoiceField):
    """A choice whose posted value is refused by its length first: the "not one of the choices"
    message repeats the value, and a megabyte of it would be rendered back."""

    def to_python(self, value: Any) -> str:
        value = super().to_python(value)
        if len(value) > MAX_CHOICE:
            raise forms.ValidationError(
                _("Pick one of the choices offered."), code="invalid_choice"
            )
        return value


class CatalogueChoiceField(BoundedChoiceField):
    """A choice among what the cluster serves: a value it no longer has says so."""

    default_error_messages = {
        "invalid_choice": _(
            "The cluster does not offer “%(value)s” (any more): pick one of the choices it has."
        ),
    }


def instance_type_choices(catalogue: Catalogue) -> list[tuple[str, list[tuple[str, str]]]]:
    """The cluster's instance types, grouped by series (u1 first: Hikube's advice for GPUs)."""
    groups: dict[str, list[tuple[str, str]]] = {}
    for t in catalogue.instance_types:
        memory = f"{t.memory_mib / 1024:g} GiB"
        groups.setdefault(instance_series(t.name), []).append(
            (t.name, f"{t.name} — {t.vcpu} vCPU / {memory}")
        )
    order = sorted(groups, key=lambda s: (s != "u1", s))
    return [(str(SERIES_LABELS.get(s, s)), groups[s]) for s in order]


def _initial(choices: list[str], *preferred: str) -> str:
    return next((p for p in preferred if p in choices), choices[0] if choices else "")


# --- GPU VM ---------------------------------------------------------------------------

SSH_KEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)


def ssh_key_problem(line: str) -> str | None:
    """Why a line is not an OpenSSH public key (``type base64 [comment]``), or None."""
    parts = line.split()
    if len(parts) < 2:
        return _("a key looks like “ssh-ed25519 AAAA… you@host”")
    kind, body = parts[0], parts[1]
    if kind not in SSH_KEY_TYPES:
        return _("unknown key type “%(type)s”") % {"type": kind[:40]}
    try:
        raw = base64.b64decode(body.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError, binascii.Error):
        return _("the key body is not base64")
    # The blob starts with its own type as a length-prefixed string.
    if len(raw) < 4 or raw[4 : 4 + int.from_bytes(raw[:4], "big")] != kind.encode():
        return _("the key body does not match its type “%(type)s”") % {"type": kind}
    return None


def few_vcpu_warning(type_name: str, vcpu: int, gpus: int) -> str:
    """Hikube's sizing advice when an instance type has too few vCPU for its GPUs."""
    return ngettext(
        "%(type)s has %(vcpu)d vCPU for %(n)d GPU: Hikube recommends at least "
        "%(min)d vCPU per GPU (e.g. %(rec)s).",
        "%(type)s has %(vcpu)d vCPU for %(n)d GPUs: Hikube recommends at least "
        "%(min)d vCPU per GPU (e.g. %(rec)s).",
        gpus,
    ) % {
        "type": type_name,
        "vcpu": vcpu,
        "n": gpus,
        "min": MIN_VCPU_PER_GPU,
        "rec": recommended_instance_type(gpus),
    }


def _check_depth(text: str) -> None:
    """Refuse YAML nested deeper than MAX_CLOUD_INIT_DEPTH, reading parser events only."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_CLOUD_INIT_DEPTH:
                raise forms.ValidationError(
                    _("Cloud-init is nested too deeply (at most %(max)d levels).")
                    % {"max": MAX_CLOUD_INIT_DEPTH},
                    code="yaml_depth",
                )
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _is_command_list(value: object) -> bool:
    """cloud-init's runcmd: a list whose items are a shell string, a list of words, or null."""
    scalar = (str, int, float, bool)
    return isinstance(value, list) and all(
        item is None
        or isinstance(item, str)
        or (isinstance(item, list) and all(isinstance(w, scalar) for w in item))
        for item in value
    )


# A VM's GPUs are passed through from one server, and a Hikube GPU server holds 8.
GPUS_PER_SERVER = 8
GPUS_PER_VM_MESSAGE = _(
    "At most %(limit_value)s GPUs of this model fit one VM (one server holds 8)."
)


class GpuVmForm(forms.Form):
    name = forms.CharField(
        label=_("Name"),
        max_length=63,
        validators=[dns1035_name],
        help_text=_("Lowercase letters, digits and “-”, starting with a letter."),
    )
    gpu_model = BoundedChoiceField(label=_("GPU model"))
    gpu_count = forms.IntegerField(
        label=_("Number of GPUs"),
        min_value=1,
        max_value=GPUS_PER_SERVER,
        initial=1,
        error_messages={"max_value": GPUS_PER_VM_MESSAGE},
    )
    instance_type = CatalogueChoiceField(
        label=_("Instance type"),
        help_text=_("Hikube recommends 8 to 16 vCPU per GPU: u1.2xlarge for one GPU."),
    )
    instance_profile = CatalogueChoiceField(label=_("Operating system profile"))
    image = CatalogueChoiceField(label=_("System disk image"))
    disk_size_gi = forms.IntegerField(
        label=_("System disk size (GiB)"), min_value=10, max_value=4096, initial=50
    )
    storage_class = CatalogueChoiceField(label=_("Storage class"))
    ssh_keys = forms.CharField(
        label=_("SSH public keys"),
        required=False,
        max_length=MAX_SSH_KEYS_TEXT,
        widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false"}),
        help_text=_("One per line."),
    )
    # Nothing open to the internet unless asked (#20 item 21): a new VM is reached from inside
    # the tenant; "Some ports" offers 22 once picked.
    external = BoundedChoiceField(
        label=_("External access"), choices=ExternalAccess.choices, initial=ExternalAccess.NONE
    )
    external_ports = forms.CharField(
        label=_("Open ports"),
        required=False,
        max_length=MAX_PORTS_TEXT,
        initial="22",
        help_text=_("Comma-separated, e.g. 22, 8888. Used with “Some ports”."),
    )
    install_driver = forms.BooleanField(
        label=_("Install the NVIDIA driver at first boot (Hikube FAQ snippet)"),
        required=False,
        initial=True,
        help_text=_(
            "The snippet for the image's family: Ubuntu's packages, Debian's non-free ones, "
            "NVIDIA's repository on Rocky Linux and AlmaLinux."
        ),
    )
    # Cloud-init runs once, at first boot: the agent is offered here, not only later.
    guest_agent = forms.BooleanField(
        label=_("Install the portal's GPU agent at first boot"),
        required=False,
        help_text=_(
            "Passed-through GPUs have no host telemetry: the agent posts nvidia-smi readings "
            "every minute, so this VM's utilization shows in the portal. It needs the driver."
        ),
    )
    cloud_init = forms.CharField(
        label=_("Cloud-init (optional)"),
        required=False,
        max_length=MAX_CLOUD_INIT,
        widget=forms.Textarea(attrs={"rows": 4, "spellcheck": "false"}),
        help_text=_(
            "A #cloud-config document of at most %(n)s characters (a longer paste is cut by the "
            "browser). Leave empty to use only the driver snippet."
        ),
    )
    run_strategy = BoundedChoiceField(
        label=_("Run strategy"), choices=RunStrategy.choices, initial=RunStrategy.ALWAYS
    )
    queue_until_capacity = forms.BooleanField(
        label=_("Queue until capacity frees"),
        required=False,
        help_text=_("If no server has enough free GPUs now, wait for one instead of refusing."),
    )

    def __init__(
        self,
        *args: Any,
        vm_kind: str = "VMInstance",
        gpu_choices: list[tuple[str, str]] | None = None,
        catalogue: Catalogue | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.vm_kind = vm_kind
        self.fields["gpu_model"].choices = gpu_choices or []
        self.catalogue = catalogue = catalogue or Catalogue()
        self.fields["instance_type"].choices = instance_type_choices(catalogue)
        types = [t.name for t in catalogue.instance_types]
        self.fields["instance_type"].initial = _initial(types, recommended_instance_type(1))
        self.fields["instance_profile"].choices = [
            (p.name, f"{p.label} ({p.name})" if p.label else p.name) for p in catalogue.profiles
        ]
        profiles = [p.name for p in catalogue.profiles]
        self.fields["instance_profile"].initial = _initial(profiles, "ubuntu")
        self.fields["image"].choices = [(i.name, image_label(i.name)) for i in catalogue.images]
        images = [i.name for i in catalogue.images]
        self.fields["image"].initial = _initial(images, "ubuntu-2404", "ubuntu")
        self.fields["storage_class"].choices = [(c.name, c.name) for c in catalogue.storage_classes]
        classes = [c.name for c in catalogue.storage_classes]
        self.fields["storage_class"].initial = _initial(
            classes, catalogue.default_storage_class, "replicated"
        )
        self.max_name = max_name_length(vm_kind)
        self.fields["name"].help_text = _(
            "Lowercase letters, digits and “-”, starting with a letter; at most %(n)d characters."
        ) % {"n": self.max_name}
        # The browser cuts a longer paste at the textarea's maxlength without a word: say it.
        self.fields["cloud_init"].help_text = self.fields["cloud_init"].help_text % {
            "n": f"{MAX_CLOUD_INIT:,}".replace(",", "\u202f")
        }
        self.warnings: list[str] = []
        if self.is_bound and self.data.get(self.add_prefix("external")) != ExternalAccess.PORTS:
            # Ports mean something only with "Some ports" (#20): otherwise not checked, not sent.
            self.fields["external_ports"].validators = []

    def clean_name(self) -> str:
        name = self.cleaned_data["name"]
        if len(name) > self.max_name:
            raise forms.ValidationError(
                _(
                    "At most %(max)d characters (the cluster adds a prefix; 53 in all); this one "
                    "has %(n)d."
                )
                % {"max": self.max_name, "n": len(name)},
                code="length",
            )
        return name

    def clean_ssh_keys(self) -> list[str]:
        keys = []
        for number, line in enumerate(self.cleaned_data["ssh_keys"].splitlines(), start=1):
            line = line.strip()
            if not line:
                continue
            problem = ssh_key_problem(line)
            if problem:
                raise forms.ValidationError(
                    _("Line %(n)d: %(problem)s.") % {"n": number, "problem": problem}, code="ssh"
                )
            keys.append(line)
            if len(keys) > MAX_SSH_KEYS:
                raise forms.ValidationError(
                    _("At most %(max)d keys.") % {"max": MAX_SSH_KEYS}, code="ssh_count"
                )
        return keys

    def clean_external_ports(self) -> list[int]:
        if self.cleaned_data.get("external") != ExternalAccess.PORTS:
            return []
        text = self.cleaned_data["external_ports"].strip()
        ports: dict[int, None] = {}  # in the order given, each once (a dict: linear)
        for part in filter(None, (p.strip() for p in text.replace(";", ",").split(","))):
            if not part.isascii() or not part.isdigit() or not 0 < int(part) < 65536:
                raise forms.ValidationError(
                    _("“%(port)s” is not a port (1 to 65535).") % {"port": part[:20]}, code="port"
                )
            ports[int(part)] = None
            if len(ports) > MAX_PORTS:
                raise forms.ValidationError(
                    _("At most %(max)d ports.") % {"max": MAX_PORTS}, code="port_count"
                )
        return list(ports)

    def clean_cloud_init(self) -> str:
        text = self.cleaned_data["cloud_init"].replace("\r\n", "\n").strip()
        if not text:
            return ""
        if not text.startswith("#cloud-config"):
            raise forms.ValidationError(
                _("Start with the line “#cloud-config”."), code="cloud_config"
            )
        try:
            _check_depth(text)
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = _(" (line %(n)d)") % {"n": mark.line + 1} if mark else ""
            raise forms.ValidationError(
                _("This is not valid YAML%(where)s.") % {"where": where}, code="yaml"
            ) from None
        except ValueError:  # a tagged or date-like value that does not convert (!!int abc)
            raise forms.ValidationError(
                _("This is not valid YAML: a value does not match its type."), code="yaml"
            ) from None
        if data is not None and not isinstance(data, dict):
            raise forms.ValidationError(_("Cloud-init must be a YAML mapping."), code="yaml")
        runcmd = (data or {}).get("runcmd")
        if runcmd is not None and not _is_command_list(runcmd):
            raise forms.ValidationError(
                _(
                    "“runcmd” must be a list of commands, each a string or a list of words, "
                    "e.g. “runcmd: [nvidia-smi]”."
                ),
                code="runcmd",
            )
        return text + "\n"

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if (
            data.get("external") == ExternalAccess.PORTS
            and not data.get("external_ports")
            and "external_ports" not in self.errors
        ):
            self.add_error("external_ports", _("List at least one port, or pick another access."))
        self._check_os(data)
        external, ports = data.get("external"), data.get("external_ports") or []
        ssh_open = external == ExternalAccess.WHOLE_IP or (
            external == ExternalAccess.PORTS and 22 in ports
        )
        if ssh_open and "ssh_keys" in data and not data["ssh_keys"]:
            self.warnings.append(
                _(
                    "SSH (port 22) is open to the internet but no SSH key is given: nobody can "
                    "log in with a key, and the port is exposed to password guessing. Add your "
                    "public key, or close the port."
                )
            )
        itype = self.catalogue.instance_type(data.get("instance_type", ""))
        count = data.get("gpu_count") or 0
        if itype and count and itype.vcpu < MIN_VCPU_PER_GPU * count:
            self.warnings.append(few_vcpu_warning(itype.name, itype.vcpu, count))
        return data

    def _check_os(self, data: dict[str, Any]) -> None:
        """The image, the OS profile and the driver snippet must agree: a Windows profile on a
        Linux image, or apt-get on Rocky, makes a VM that never works as asked."""
        image, profile = data.get("image"), data.get("instance_profile")
        if not image or not profile:
            return
        image_name = image_label(image)
        entry = self.catalogue.image(image)
        family = entry.os_family if entry else ""
        labels = {p.name: p.label or p.name for p in self.catalogue.profiles}
        fitting = tuple(p for p in FAMILY_PROFILES.get(family, ()) if p in labels)
        chosen = self.catalogue.profile(profile)
        if (chosen and chosen.windows) or (fitting and profile not in fitting):
            self.add_error(
                "instance_profile",
                _("%(profile)s does not fit the %(image)s image; profiles that fit: %(fits)s.")
                % {
                    "profile": labels.get(profile, profile),
                    "image": image_name,
                    "fits": ", ".join(labels[p] for p in fitting) if fitting else _("Linux ones"),
                },
            )
        packager = FAMILY_PACKAGER.get(family, "")
        if data.get("install_driver") and not driver_cloud_init(family):
            self.add_error(
                "install_driver",
                _(
                    "The portal has no driver snippet for %(image)s: untick it and install the "
                    "NVIDIA driver in your own cloud-init."
                )
                % {"image": image_name},
            )
        script = data.get("cloud_init") or ""
        other = {"apt": ("dnf ", "yum "), "dnf": ("apt-get", "apt "), "apk": ("apt-get", "dnf ")}
        used = [word.strip() for word in other.get(packager, ()) if word in script]
        if used:
            self.warnings.append(
                _("Your cloud-init calls %(tool)s, which the %(image)s image does not have.")
                % {"tool": used[0], "image": image_name}
            )

    def cloud_init_text(self) -> str:
        """The user's cloud-init, with the driver snippet's commands merged in when asked."""
        text = self.cleaned_data.get("cloud_init", "")
        image = self.cleaned_data.get("image", "")
        entry = self.catalogue.image(image)
        snippet = driver_cloud_init(entry.os_family if entry else os_family(image))
        if not self.cleaned_data.get("install_driver") or not snippet:
            return text
        if not text:
            return snippet
        data = yaml.safe_load(text) or {}
        driver = yaml.safe_load(snippet)
        data["runcmd"] = list(data.get("runcmd") or []) + driver["runcmd"]
        return "#cloud-config\n" + yaml.safe_dump(data, sort_keys=False)

    def vm_request(self) -> VmRequest:
        """The valid form as the request the services take (the pages and the API)."""
        d = self.cleaned_data
        return VmRequest(
            name=d["name"],
            gpu_resource=d["gpu_model"],
            gpu_count=d["gpu_count"],
            instance_type=d["instance_type"],
            instance_profile=d["instance_profile"],
            image=d["image"],
            disk_size_gi=d["disk_size_gi"],
            storage_class=d["storage_class"],
            ssh_keys=tuple(d["ssh_keys"]),
            external=d["external"],
            external_ports=tuple(d["external_ports"]) or (22,),
            cloud_init=self.cloud_init_text(),
            run_strategy=d["run_strategy"],
            queue_until_capacity=d["queue_until_capacity"],
            guest_agent=bool(d.get("guest_agent")),
        )


# `kubernetes-<cluster>-<group>` is the MachineDeployment's name and a label value (<= 63):
# cozystack v1.1 packages/apps/kubernetes/templates/cluster.yaml.
MAX_CLUSTER_AND_GROUP = 63 - len("kubernetes-") - len("-")


class NodeGroupForm(forms.Form):
    cluster_name = BoundedChoiceField(label=_("Kubernetes cluster"), required=False)
    new_cluster = forms.CharField(
        label=_("…or a new cluster named"),
        required=False,
        max_length=42,
        validators=[dns1035_name],
        help_text=_("Created with this group and the GPU operator addon on."),
    )
    version = CatalogueChoiceField(label=_("Kubernetes version (new cluster)"), required=False)
    group = forms.CharField(
        label=_("Node group name"),
        max_length=40,
        validators=[dns1035_name],
        help_text=_("Lowercase letters, digits and “-”, starting with a letter."),
    )
    min_replicas = forms.IntegerField(label=_("Minimum workers"), min_value=0, max_value=100)
    max_replicas = forms.IntegerField(label=_("Maximum workers"), min_value=1, max_value=100)
    instance_type = CatalogueChoiceField(label=_("Instance type"))
    disk_size_gi = forms.IntegerField(
        label=_("Worker disk size (GiB)"), min_value=10, max_value=4096, initial=100
    )
    gpu_model = BoundedChoiceField(label=_("GPU model"))
    gpus_per_node = forms.IntegerField(
        label=_("GPUs per worker"),
        min_value=1,
        max_value=GPUS_PER_SERVER,
        initial=1,
        error_messages={"max_value": GPUS_PER_VM_MESSAGE},
    )
    ingress = forms.BooleanField(
        label=_("Workers also host the ingress (role ingress-nginx)"), required=False
    )

    def __init__(
        self,
        *args: Any,
        clusters: list[str] | None = None,
        gpu_choices: list[tuple[str, str]] | None = None,
        resize: bool = False,
        catalogue: Catalogue | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.fields["cluster_name"].choices = [("", "—"), *((c, c) for c in clusters or [])]
        self.fields["gpu_model"].choices = gpu_choices or []
        self.catalogue = catalogue = catalogue or Catalogue()
        self.fields["instance_type"].choices = instance_type_choices(catalogue)
        types = [t.name for t in catalogue.instance_types]
        self.fields["instance_type"].initial = _initial(types, recommended_instance_type(1))
        versions = catalogue.kubernetes_versions
        self.fields["version"].choices = [(v, v) for v in versions]
        self.fields["version"].initial = _initial(versions, catalogue.kubernetes_default)
        self.resize = resize
        if resize:
            # A resize changes one existing group: its cluster and name are fixed, and no posted
            # "new cluster" can turn it into a create.
            del self.fields["new_cluster"], self.fields["version"]
            self.fields["cluster_name"].disabled = True
            self.fields["group"].disabled = True
        self.warnings: list[str] = []

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        named = data.get("cluster_name") or data.get("new_cluster")
        if not named and not {"cluster_name", "new_cluster"} & set(self.errors):
            self.add_error("cluster_name", _("Pick a cluster, or name a new one."))
        if data.get("new_cluster") and data.get("new_cluster") in dict(
            self.fields["cluster_name"].choices
        ):
            self.add_error("new_cluster", _("This cluster exists: pick it above."))
        low, high = data.get("min_replicas"), data.get("max_replicas")
        if low is not None and high is not None and low > high:
            self.add_error("max_replicas", _("At least the minimum."))
        cluster, group = data.get("new_cluster") or data.get("cluster_name"), data.get("group")
        if cluster and group and len(cluster) + len(group) > MAX_CLUSTER_AND_GROUP:
            # kubernetes-<cluster>-<group> names the MachineDeployment and is a label value.
            self.add_error(
                "group",
                _(
                    "The cluster and group names together may have at most %(max)d characters "
                    "(kubernetes-%(cluster)s-<group> must fit in a 63-character label): "
                    "shorten this one to %(left)d."
                )
                % {
                    "max": MAX_CLUSTER_AND_GROUP,
                    "cluster": cluster,
                    "left": max(1, MAX_CLUSTER_AND_GROUP - len(cluster)),
                },
            )
        itype = self.catalogue.instance_type(data.get("instance_type", ""))
        per = data.get("gpus_per_node") or 0
        if itype and per and itype.vcpu < MIN_VCPU_PER_GPU * per:
            self.warnings.append(few_vcpu_warning(itype.name, itype.vcpu, per))
        if low == 0:
            self.warnings.append(
                _(
                    "With 0 minimum workers the group may never scale up: the autoscaler adds "
                    "workers only for pods that wait."
                )
            )
        return data

    def node_group_request(self) -> NodeGroupRequest:
        """The valid form as the request the services take (the pages and the API)."""
        d = self.cleaned_data
        new_cluster = d.get("new_cluster", "")
        return NodeGroupRequest(
            cluster_name=new_cluster or d["cluster_name"],
            new_cluster_version=(d.get("version") or self.catalogue.kubernetes_default)
            if new_cluster
            else "",
            group=d["group"],
            min_replicas=d["min_replicas"],
            max_replicas=d["max_replicas"],
            instance_type=d["instance_type"],
            disk_size_gi=d["disk_size_gi"],
            gpu_resource=d["gpu_model"],
            gpus_per_node=d["gpus_per_node"],
            roles=("ingress-nginx",) if d["ingress"] else (),
        )
