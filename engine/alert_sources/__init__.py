"""One module per alert webhook format besides Alertmanager (which lives in engine.alerts). Each exposes
`from_<source>(payload) -> list[Alert]` that validates the whole payload before returning anything."""
from engine.alert_sources.datadog import from_datadog
from engine.alert_sources.generic import from_generic
from engine.alert_sources.grafana import from_grafana
from engine.alert_sources.opsgenie import from_opsgenie
from engine.alert_sources.pagerduty import from_pagerduty

NORMALISERS = {
    "grafana": from_grafana,
    "pagerduty": from_pagerduty,
    "datadog": from_datadog,
    "opsgenie": from_opsgenie,
    "generic": from_generic,
}
