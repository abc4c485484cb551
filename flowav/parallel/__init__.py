"""Device mesh, logical-axis rules and sharding helpers."""
