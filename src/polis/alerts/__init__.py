"""Early warning: alert rules over observations, forecasts, anomaly scores and event bursts; their
lifecycle (raise, update, cancel, cooldown); CAP 1.2 messages and NGSI-LD `Alert` entities."""
