"""CTI daemon: wires the AMI link, the call tracker, the CRM bridge, agents and the dialer."""
