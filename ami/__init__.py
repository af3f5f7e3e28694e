"""Asterisk Manager Interface: the link (I/O edge), framing and the pure call tracker."""
