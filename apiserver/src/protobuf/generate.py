#!/usr/bin/env python3
"""Writes schema.rs: the protobuf wire schema of the kinds the API server serves.

Field numbers and types come from k8s-pb (prost code generated from upstream's
generated.proto), JSON names and which fields are required from k8s-openapi, and which
fields are Go pointers (whose zero value is kept: `storageClassName: ""`) from
pointers.txt. Both crates are read from cargo's registry:

    python3 apiserver/src/protobuf/generate.py > apiserver/src/protobuf/schema.rs

pointers.txt lists the fields of upstream's types.go whose Go type is a pointer
(`*string`, `*bool`, `*int32`, `*Struct`, ...), one `definition.jsonName` a line.
"""
import glob
import os
import re
import sys

REGISTRY = glob.glob(os.path.expanduser("~/.cargo/registry/src/*/"))[0]
PB = os.path.join(REGISTRY, "k8s-pb-0.9.0/src")
OPENAPI = os.path.join(REGISTRY, "k8s-openapi-0.29.0/src/v1_37")
HERE = os.path.dirname(os.path.abspath(__file__))

ROOTS = [
    "io.k8s.api.core.v1.PersistentVolume", "io.k8s.api.core.v1.PersistentVolumeList",
    "io.k8s.api.core.v1.PersistentVolumeClaim", "io.k8s.api.core.v1.PersistentVolumeClaimList",
    "io.k8s.api.core.v1.Event", "io.k8s.api.core.v1.EventList",
    "io.k8s.api.core.v1.Node", "io.k8s.api.core.v1.NodeList",
    "io.k8s.api.core.v1.Namespace", "io.k8s.api.core.v1.NamespaceList",
    "io.k8s.api.core.v1.Pod", "io.k8s.api.core.v1.PodList",
    "io.k8s.api.core.v1.Secret", "io.k8s.api.core.v1.SecretList",
    "io.k8s.api.storage.v1.StorageClass", "io.k8s.api.storage.v1.StorageClassList",
    "io.k8s.api.storage.v1.CSIDriver", "io.k8s.api.storage.v1.CSIDriverList",
    "io.k8s.api.storage.v1.CSINode", "io.k8s.api.storage.v1.CSINodeList",
    "io.k8s.api.storage.v1.VolumeAttachment", "io.k8s.api.storage.v1.VolumeAttachmentList",
    "io.k8s.api.storage.v1.CSIStorageCapacity", "io.k8s.api.storage.v1.CSIStorageCapacityList",
    "io.k8s.api.storage.v1.VolumeAttributesClass", "io.k8s.api.storage.v1.VolumeAttributesClassList",
    "io.k8s.api.coordination.v1.Lease", "io.k8s.api.coordination.v1.LeaseList",
    "io.k8s.api.rbac.v1.Role", "io.k8s.api.rbac.v1.RoleList",
    "io.k8s.api.rbac.v1.ClusterRole", "io.k8s.api.rbac.v1.ClusterRoleList",
    "io.k8s.api.rbac.v1.RoleBinding", "io.k8s.api.rbac.v1.RoleBindingList",
    "io.k8s.api.rbac.v1.ClusterRoleBinding", "io.k8s.api.rbac.v1.ClusterRoleBindingList",
    "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions",
    "io.k8s.apimachinery.pkg.apis.meta.v1.Status",
]

# Encoded by hand in codec.rs: their JSON form is not an object of their fields.
SPECIAL = {
    "io.k8s.apimachinery.pkg.apis.meta.v1.Time": "Time",
    "io.k8s.apimachinery.pkg.apis.meta.v1.MicroTime": "MicroTime",
    "io.k8s.apimachinery.pkg.api.resource.Quantity": "Quantity",
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString": "IntOrString",
    "io.k8s.apimachinery.pkg.runtime.RawExtension": "RawJson",
    "io.k8s.apimachinery.pkg.apis.meta.v1.FieldsV1": "RawJson",
    "io.k8s.apimachinery.pkg.apis.meta.v1.Duration": "Duration",
}


def norm(name):
    return name.replace("_", "").lower()


def parse_pb():
    """{definition: [(tag, rust_name, kind, label, type_ref)]}"""
    messages = {}
    for path in glob.glob(os.path.join(PB, "**/mod.rs"), recursive=True):
        module = os.path.relpath(os.path.dirname(path), PB).split(os.sep)
        package = "io.k8s." + ".".join(module)
        text = open(path).read()
        for m in re.finditer(r"pub struct (\w+) \{(.*?)\n\}", text, re.S):
            # Fields may wrap over lines: join the body without its doc comments.
            body = " ".join(
                line.strip() for line in m.group(2).splitlines()
                if not line.strip().startswith("//")
            )
            fields = []
            for f in re.finditer(
                r"#\[prost\((.*?)\)\]\s*pub (r#)?(\w+):\s*(.*?),\s*(?=#\[|$)", body
            ):
                tag = int(re.search(r'tag = "(\d+)"', f.group(1)).group(1))
                fields.append((tag, f.group(3), f.group(1), f.group(4)))
            messages[(package, norm(m.group(1)))] = (m.group(1), module, fields)
    return messages


def parse_openapi():
    """{definition: {rust_name: (json_name, required)}}"""
    defs = {}
    for path in glob.glob(os.path.join(OPENAPI, "**/*.rs"), recursive=True):
        text = open(path).read()
        d = re.match(r"// Generated from definition (\S+)", text)
        if not d:
            continue
        struct = re.search(r"pub struct \w+ \{(.*?)\n\}", text, re.S)
        if not struct:
            continue
        optional = {}
        for f in re.finditer(r"^\s+pub (r#)?(\w+): (.*),$", struct.group(1), re.M):
            optional[f.group(2)] = f.group(3).startswith("Option<")
        names = {}
        for k in re.finditer(r'"([^"]+)" => Field::Key_(\w+),', text):
            names[k.group(2)] = k.group(1)
        defs[d.group(1)] = {
            rust: (names.get(rust, rust), not opt) for rust, opt in optional.items()
        }
    return defs


def resolve(module, rust_type):
    """The definition a prost field type names, relative to its module."""
    inner = re.sub(r"\s+", "", rust_type)
    if "BTreeMap<" in inner:
        inner = inner.split(",", 1)[1]
    inner = re.sub(r"::core::option::Option<|::prost::alloc::boxed::Box<|::prost::alloc::vec::Vec<", "", inner)
    inner = inner.rstrip(">,")
    parts = inner.split("::")
    where = list(module)
    while parts and parts[0] == "super":
        where.pop()
        parts.pop(0)
    return "io.k8s." + ".".join(where + parts[:-1]), parts[-1]


def main():
    pb = parse_pb()
    openapi = parse_openapi()
    pointers = set(open(os.path.join(HERE, "pointers.txt")).read().split())
    by_norm = {(d.rsplit(".", 1)[0], norm(d.rsplit(".", 1)[1])): d for d in openapi}
    order, index = [], {}
    queue = list(ROOTS)
    resolved = {}
    inlined_into = {}

    def embedded(target, parent_api):
        """Whether every field of `target` is a field of the parent's JSON form."""
        names = {norm(json) for json, _ in parent_api.values()}
        _, _, fields = pb[key_of(target)]
        return bool(fields) and all(norm(rust) in names for _, rust, _, _ in fields)

    def key_of(definition):
        package, name = definition.rsplit(".", 1)
        return (package, norm(name))

    while queue:
        definition = queue.pop(0)
        if definition in index or definition in SPECIAL:
            continue
        index[definition] = len(order)
        order.append(definition)
        name, module, fields = pb[key_of(definition)]
        # An inlined struct has no definition of its own: its fields are the parent's.
        api = openapi.get(definition) or inlined_into.get(definition, {})
        api_by_norm = {norm(json): (rust, json, req) for rust, (json, req) in api.items()}
        out = []
        for tag, rust, attr, rust_type in fields:
            kind = attr.split(",")[0].strip()
            repeated = "repeated" in attr
            target = None
            if kind == "message" or "message" in attr:
                package, tname = resolve(module, rust_type)
                target = by_norm.get((package, norm(tname)))
                if target is None:
                    pname, _, _ = pb[(package, norm(tname))]
                    target = f"{package}.{pname}"
                if target not in SPECIAL:
                    queue.append(target)
            match = api_by_norm.get(norm(rust))
            inline = False
            if match:
                _, json, required = match
            elif api and target and target not in SPECIAL and embedded(target, api):
                # Go embeds the struct with `json:",inline"`: its fields sit in the parent.
                json, required, inline = "", False, True
                inlined_into[target] = api
            else:
                # A field newer or older than k8s-openapi's version: upstream's JSON
                # names are the lowerCamelCase of prost's snake_case ones.
                first, *rest = rust.split("_")
                json, required = first + "".join(w.capitalize() for w in rest), False
                print(f"note: {definition}.{rust} named {json}", file=sys.stderr)
            out.append(dict(tag=tag, json=json, attr=attr, kind=kind, repeated=repeated,
                            target=target, required=required, inline=inline,
                            pointer=f"{definition}.{json}" in pointers))
        resolved[definition] = out

    def kind_expr(f):
        attr = f["attr"]
        if attr.startswith("btree_map"):
            value = re.search(r'btree_map = "string, (\w+)"', attr).group(1)
            inner = {"string": "Kind::String", "bytes": "Kind::Bytes"}.get(value)
            if inner is None:
                inner = target_expr(f["target"])
            return f"Kind::Map(&{inner})"
        if f["kind"] == "message":
            return target_expr(f["target"])
        return {"string": "Kind::String", "bytes": "Kind::Bytes", "bool": "Kind::Bool",
                "int32": "Kind::Int32", "int64": "Kind::Int64", "double": "Kind::Double"}[f["kind"]]

    def target_expr(target):
        if target in SPECIAL:
            return f"Kind::{SPECIAL[target]}"
        return f"Kind::Message({index[target]})"

    print("// @generated by generate.py from k8s-pb 0.9.0, k8s-openapi 0.29.0 (v1_37) and")
    print("// pointers.txt. Do not edit; run the script.")
    print()
    print("use super::schema_types::{Field, Kind, Message, Presence};")
    print()
    print(f"pub static MESSAGES: [Message; {len(order)}] = [")
    for i, definition in enumerate(order):
        print(f"    // {i}")
        print(f"    Message {{ name: {definition!r}, fields: &[".replace("'", '"'))
        for f in resolved[definition]:
            presence = ("Presence::Inline" if f["inline"] else
                        "Presence::Always" if f["required"] else
                        "Presence::Pointer" if f["pointer"] else "Presence::OmitZero")
            print(f'        Field {{ tag: {f["tag"]}, json: "{f["json"]}", kind: {kind_expr(f)}, '
                  f'repeated: {str(f["repeated"]).lower()}, presence: {presence} }},')
        print("    ] },")
    print("];")
    print()
    print("/// The index in MESSAGES of each root kind and list.")
    print("pub static ROOTS: &[(&str, usize)] = &[")
    for definition in ROOTS:
        print(f'    ("{definition}", {index[definition]}),')
    print("];")


main()
