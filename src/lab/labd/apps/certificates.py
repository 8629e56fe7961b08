"""Certificates from labd's CA for the services an app runs (docs/apps.md, "TLS from labd").

A module asks for them with ``x-labd-certificates`` on an object parameter::

    tls:
      type: object
      x-labd-certificates:
        node: {common_name: node, hosts: ["{release}", "*.{release}"], server: true, client: true}
        client: {common_name: root, client: true}

When the values leave that parameter out, labd fills it with ``ca_crt`` (its CA) and, per
entry, ``<entry>_crt`` and ``<entry>_key`` (mark the keys ``secret: true``: they are then
sealed like any secret value). ``{release}`` and ``{namespace}`` in ``hosts`` are replaced (by
plain substitution, not ``str.format``). Common names never contain ``/``, so none of these
certificates is a labd identity. Each is recorded in the certificates table as
``service/CLUSTER/NAMESPACE/NAME/CN``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs
import trio

from lab import pki
from lab.model.apps import ReleaseKey
from lab.modules import Module
from lab.modules.spec import certificate_requests

if TYPE_CHECKING:
    from lab.labd.context import LabdContext


def _host(template: str, key: ReleaseKey) -> str:
    return template.replace("{release}", key.name).replace("{namespace}", key.namespace)


async def fill(
    context: LabdContext, module: Module, values: Mapping[str, Any], key: ReleaseKey
) -> dict[str, Any]:
    """``values`` with every certificate parameter it leaves out issued by labd's CA."""
    out = dict(values)
    for field, wanted in certificate_requests(module.spec).items():
        if field in out:
            continue
        ca = context.ca.signer
        issued: dict[str, str] = {"ca_crt": ca.cert_pem().decode()}
        for name, spec in wanted.items():
            hosts = [_host(h, key) for h in spec.get("hosts", [])]
            key_pem = await trio.to_thread.run_sync(pki.generate_key)
            csr = pki.make_csr(key_pem, spec["common_name"])
            cert_pem, record = pki.issue_service_cert(
                ca,
                csr,
                spec["common_name"],
                hosts,
                server=bool(spec.get("server", False)),
                client=bool(spec.get("client", False)),
            )
            subject = f"service/{key.cluster}/{key.namespace}/{key.name}/{spec['common_name']}"
            await context.store.certificates.record(
                attrs.evolve(record.to_record(), subject=subject)
            )
            issued[f"{name}_crt"] = cert_pem.decode()
            issued[f"{name}_key"] = key_pem.decode()
        out[field] = issued
    return out
