"""Where events go besides the daily log: SIEM outputs, webhooks, a Maltrail server."""
