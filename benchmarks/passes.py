"""The passes the scan, layer and model suites share: a forward (under no_grad) and a forward
with its backward. Each suite names its own implementations; these names are common to all."""

FORWARD, FORWARD_BACKWARD = "fwd", "fwd+bwd"
PASSES = (FORWARD, FORWARD_BACKWARD)
