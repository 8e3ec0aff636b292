"""What every node shares: parameters, run (main), diagnostics, detection (one image message), QoS, stamps."""
