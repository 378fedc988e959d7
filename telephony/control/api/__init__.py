"""The control plane's HTTP API: one router per resource."""
