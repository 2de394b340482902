"""Connector name -> implementation."""
from __future__ import annotations

from connectors.base import Connector, ConnectorError
from connectors.http import HttpConnector
from connectors.kubernetes import KubernetesConnector
from connectors.prometheus import PrometheusConnector
from connectors.sql import SqlConnector
from connectors.ssh import SshConnector

_CONNECTORS: dict[str, Connector] = {c.name: c for c in (HttpConnector(), SshConnector(), SqlConnector(),
                                                         KubernetesConnector(), PrometheusConnector())}


def get(name: str) -> Connector:
    try:
        return _CONNECTORS[name]
    except KeyError:
        raise ConnectorError(f"the {name} connector is not available on this worker") from None


def register(connector: Connector) -> None:
    _CONNECTORS[connector.name] = connector
