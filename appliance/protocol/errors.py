"""Exceptions raised by the protocol core."""


class ProtocolError(ValueError):
    """A datagram or frame that does not follow the wire format."""


class AuthenticationError(ProtocolError):
    """A datagram whose MAC does not verify with any known key."""
