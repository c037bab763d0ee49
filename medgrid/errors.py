"""One exception type for mistakes a user can make, so the CLI can print one line and exit 2."""


class UserError(Exception):
    """Bad input from the user (unknown name, bad value, missing or corrupt file).

    The CLI prints ``medgrid: error: <message>`` on stderr and exits with code 2;
    everything else is a bug and keeps its traceback.
    """
