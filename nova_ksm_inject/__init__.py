"""nova-ksm-inject: guest image injection and KSM tuning for compute nodes."""
