"""Epidemic response on region-level mobility: case forecasts and what-if scenarios on aggregated
region-to-region flows. Inputs are region-level counts and flows only; nothing here knows a person."""
