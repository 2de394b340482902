"""`warroom serve` with WARROOM_LLM=anthropic, pointed at the Messages API stand-in: an alert webhook ends in a
model call carrying the forced tool, and the call's tokens show up on /metrics."""
import time

import pytest

from tests.anthropic_standin import AnthropicStandIn, tool
from tests.conftest import EXAMPLES
from tests.served import Served

FIRING = (EXAMPLES / "alerts/payments-high-error-rate-firing.json").read_bytes()


@pytest.fixture
def api():
    with AnthropicStandIn() as standin:
        yield standin


def test_serve_asks_the_configured_model_and_exports_its_usage(tmp_path, api):
    api.default = tool({"hypotheses": [{"title": "Database pool exhausted", "cause": "Connections ran out.",
                                        "evidence": ["A1"]}]})
    served = Served(tmp_path / "data", WARROOM_LLM="anthropic", ANTHROPIC_BASE_URL=api.url,
                    ANTHROPIC_API_KEY="sk-ant-serve-test-key-000000000000", WARROOM_ANTHROPIC_MODEL="claude-test")
    try:
        assert served.post("/hooks/alertmanager", FIRING)[0] == 202
        deadline = time.monotonic() + 60
        while not api.messages() and time.monotonic() < deadline:
            time.sleep(0.3)
        body = api.messages()[0]   # then, as no runbook is ingested here, a plan is asked for too
        assert body["tool_choice"]["name"] == "propose_hypotheses" and body["model"] == "claude-test"
        headers = api.requests[0].headers
        assert "sk-ant-serve-test-key-000000000000" in headers.get("x-api-key", headers.get("authorization", ""))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            metrics = served.get("/metrics")[1].decode()
            if 'warroom_llm_calls_total{outcome="ok",provider="anthropic"} 1.0' in metrics:
                break
            time.sleep(0.3)
        else:
            pytest.fail(f"no successful model call on /metrics:\n{metrics}")
        assert 'warroom_llm_tokens_total{kind="input",provider="anthropic"}' in metrics
        assert 'warroom_llm_breaker_state{provider="anthropic",state="closed"} 1.0' in metrics
    finally:
        served.stop()
