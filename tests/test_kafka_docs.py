"""The Kafka guidance of docs/deployment.md holds: every `kafka.security` example loads into the production config
and builds a Kafka client (certificates and password files included), and the recommended dead-letter topic
settings are accepted by a real broker."""

from __future__ import annotations

import re
import shlex
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.client import AIOKafkaClient

from bridge.kafka.client_options import connection_options
from bridge.settings import parse_settings
from bridge.yamlsrc import load_yaml

REPO = Path(__file__).resolve().parents[1]
PAGE = (REPO / "docs" / "deployment.md").read_text(encoding="utf-8")
PRODUCTION_ENV = {
    "KAFKA_BOOTSTRAP_SERVERS": "kafka-1.campus.internal:9093",
    "TOP_GATEWAY_URL": "https://eco.taobao.com/router/rest",
    "TOP_APP_KEY": "12345678",
    "TOP_APP_SECRET": "a-production-secret",
    "KAFKA_SASL_USERNAME": "api-key-1",
    "KAFKA_SASL_PASSWORD": "api-secret-1",
}


def section(title: str) -> str:
    return PAGE.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


SECURITY_EXAMPLES = re.findall(r"```yaml\n(.*?)```", section("Kafka security"), flags=re.DOTALL)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA, a client certificate signed by it with its key, and a password file, made with openssl."""
    d = tmp_path_factory.mktemp("tls")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=60)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "kafka-ca.pem",
            "-days", "2", "-subj", "/CN=test-kafka-ca")  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "kafka-client.key", "-out", "client.csr",
            "-subj", "/CN=campus-bridge")  # fmt: skip
    openssl("x509", "-req", "-in", "client.csr", "-CA", "kafka-ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "kafka-client.pem", "-days", "2")  # fmt: skip
    (d / "kafka-password").write_text("scram-password\n")
    return {p.name: p for p in d.iterdir()}


def test_the_page_has_sasl_tls_and_mutual_tls_examples() -> None:
    protocols = [yaml.safe_load(e)["kafka"]["security"]["protocol"] for e in SECURITY_EXAMPLES]
    assert protocols.count("SASL_SSL") >= 2 and "SSL" in protocols


@pytest.mark.parametrize("example", SECURITY_EXAMPLES, ids=lambda e: yaml.safe_load(e)["kafka"]["security"]["protocol"])
async def test_security_example_loads_into_the_production_config_and_builds_a_kafka_client(
    example: str, tls_files: dict[str, Path]
) -> None:
    data, locator = load_yaml(REPO / "config" / "bridge.yaml")
    security: dict[str, Any] = yaml.safe_load(example)["kafka"]["security"]
    for key, value in security.items():  # the documented paths, pointing at the files made above
        if isinstance(value, str) and value.startswith("/"):
            security[key] = str(tls_files[Path(value).name])
    data["kafka"]["security"] = security
    settings = parse_settings(data, file="config/bridge.yaml", locator=locator, env=PRODUCTION_ENV)
    options = connection_options(settings.kafka)
    assert options["security_protocol"] == security["protocol"]
    if "SSL" in security["protocol"]:
        assert options["ssl_context"].check_hostname
    if security["protocol"].startswith("SASL"):
        assert options["sasl_plain_password"] in {"scram-password", "api-secret-1"}
    client = AIOKafkaClient(**options)  # aiokafka's own checks of the combination (no connection is made)
    assert client._security_protocol == security["protocol"]
    await client.close()


def create_command(title: str) -> list[str]:
    [block] = re.findall(r"```sh\n(.*?)```", section(title), flags=re.DOTALL)
    [line] = [line for line in block.splitlines() if line.startswith("kafka-topics.sh")]
    return shlex.split(line)


@pytest.mark.parametrize(
    ("title", "name"),
    [("The dead-letter topic", "campus-bridge.dlq"), ("The deferred topic", "campus-bridge.deferred")],
    ids=["dead-letter", "deferred"],
)
async def test_recommended_topic_settings_are_accepted_by_a_real_broker(
    kafka_bootstrap: str, new_topic: Callable[..., Awaitable[str]], title: str, name: str
) -> None:
    argv = create_command(title)
    assert argv[argv.index("--topic") + 1] == name, "the name in config/bridge.yaml"
    configs = dict(argv[i + 1].split("=", 1) for i, arg in enumerate(argv) if arg == "--config")
    assert configs["max.message.bytes"] == str(2 * 1_048_576 + 65_536), "2 x max_record_bytes + 64 KiB"
    assert int(configs["retention.ms"]) == 7 * 24 * 3600 * 1000  # deferred: above a 24 h hold plus an outage
    topic = await new_topic(int(argv[argv.index("--partitions") + 1]), prefix="doc", configs=configs)
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        await admin.close()
    [resource] = response.resources
    applied = {entry[0]: entry[1] for entry in resource[4]}
    for key, value in configs.items():
        assert applied[key] == value, key
