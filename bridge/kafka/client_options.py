"""aiokafka connection options (bootstrap, security) built from the `kafka` config section."""

from __future__ import annotations

import ssl
from typing import Any

from bridge.settings import KafkaSettings


def connection_options(k: KafkaSettings) -> dict[str, Any]:
    """Keyword arguments shared by the consumer, the producer and the admin client."""
    sec = k.security
    opts: dict[str, Any] = {
        "bootstrap_servers": [s.strip() for s in k.bootstrap_servers.split(",")],
        "client_id": k.client_id,
        "security_protocol": sec.protocol,
    }
    if sec.protocol in ("SSL", "SASL_SSL"):
        ctx = ssl.create_default_context(cafile=str(sec.ssl_cafile) if sec.ssl_cafile else None)
        if sec.ssl_certfile:
            ctx.load_cert_chain(str(sec.ssl_certfile), str(sec.ssl_keyfile) if sec.ssl_keyfile else None)
        ctx.check_hostname = sec.ssl_check_hostname
        opts["ssl_context"] = ctx
    if sec.protocol.startswith("SASL"):
        opts["sasl_mechanism"] = sec.sasl_mechanism
        opts["sasl_plain_username"] = sec.sasl_username
        opts["sasl_plain_password"] = sec.sasl_password.get_secret_value() if sec.sasl_password else None
    return opts
