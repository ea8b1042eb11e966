"""The exceptions gatelab raises for bad input.

Every one says what was wrong and what is accepted; the CLI prints it as one
line and exits with status 2.
"""


class GatelabError(ValueError):
    """Bad input: a wrong shape, an unknown name, an impossible hyperparameter, a malformed file."""


class DataMissingError(GatelabError, FileNotFoundError):
    """A data file is neither on disk nor downloadable here."""


def check_choice(what: str, value: str, accepted) -> str:
    """Return ``value`` if it is one of ``accepted``, else raise a GatelabError naming them."""
    accepted = list(accepted)
    if value not in accepted:
        raise GatelabError(f"unknown {what} {value!r}; accepted: {', '.join(map(str, accepted))}")
    return value
