"""Errors a user can act on; the CLI prints them as one line instead of a traceback."""


class UserError(Exception):
    """A foreseeable problem with a message that says what to do."""


class BrokerUnavailable(UserError):
    pass


class FatalProducerError(UserError):
    pass
