"""Problems with the user's input or files: one line, no traceback (config.run_main shows them)."""


class UserError(Exception):
    """A problem with the user's input or files: reported as one line, without a traceback."""


def require(condition: bool, message: str) -> None:
    if not condition:
        raise UserError(message)
