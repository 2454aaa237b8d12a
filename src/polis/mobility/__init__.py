"""Person-level mobility (trips, pings): the generic schema, the loaders, the gated store and the
aggregate products (hourly flows, origin-destination matrices)."""
