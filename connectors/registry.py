"""Connector name -> implementation. Connectors not built yet refuse clearly instead of pretending."""
from __future__ import annotations

from connectors.base import Connector, ConnectorError
from connectors.http import HttpConnector

_CONNECTORS: dict[str, Connector] = {"http": HttpConnector()}


def get(name: str) -> Connector:
    try:
        return _CONNECTORS[name]
    except KeyError:
        raise ConnectorError(f"the {name} connector is not available on this worker") from None


def register(connector: Connector) -> None:
    _CONNECTORS[connector.name] = connector
