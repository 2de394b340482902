"""The brain: vocabulary, classification, retrieval, hypotheses, planning, policy, cards."""
