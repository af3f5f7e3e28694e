"""Outbound dialer: campaigns, leads, pure pacing, compliance and utilization."""
