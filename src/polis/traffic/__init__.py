"""Road traffic from speed sensors: free-flow levels, congestion and sudden speed drops."""
