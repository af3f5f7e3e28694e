"""CRM bridge: caller identification, interactions and cases, external CRM adapters."""
