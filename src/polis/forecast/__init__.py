"""Forecasting: models over panels of sensor series, benchmark protocols, a registry and live serving."""
